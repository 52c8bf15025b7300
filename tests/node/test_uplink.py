"""A node's uplink in the tokens/s it announces (node/uplink.py): `--upload-mbps` folds the time each token's
output takes to leave into both figures, so clients price a slow home uplink as they price slow compute."""

from __future__ import annotations

import pytest
import torch

from node.config import NodeConfig, resolve
from node.server import Node
from node.uplink import MBIT, output_bytes, through_uplink
from routing.planner import batch_step
from swarmlm.cli import build_parser


def config(*argv: str) -> NodeConfig:
    return resolve(build_parser().parse_args(["node", "run", *argv]), {})


def test_a_fast_node_behind_a_slow_uplink_is_as_fast_as_its_outputs_leave():
    """An RTX 3090's 32 blocks of a 70B model compute ~1,300 tokens/s batched; a 16 KiB state each on a
    20 Mbit/s uplink leaves at ~153 a second, and the announced figure is the two in series."""
    state = output_bytes(8192, 2)
    assert state == 16384
    leaves = 20 * MBIT / state
    assert leaves == pytest.approx(152.6, abs=0.1)
    assert through_uplink(1300.0, state, 20.0) == pytest.approx(1 / (1 / 1300 + 1 / leaves))
    assert through_uplink(1300.0, state, 20.0) < leaves
    assert through_uplink(1300.0, state, 0.0) == 1300.0  # not given: not priced
    assert through_uplink(1300.0, state, 10_000.0) == pytest.approx(1300.0, rel=0.02)  # a datacenter's 10 Gbit/s


def test_the_planner_prices_a_loaded_node_behind_a_slow_uplink_by_what_it_sends():
    """Folded into both figures, each session's output costs its time on the uplink in the planner's
    step (routing/planner.py `batch_step`): ten sessions take ten states' time, whatever the GPU."""
    state, mbps = output_bytes(8192, 2), 20.0
    single, batched = through_uplink(40.0, state, mbps), through_uplink(1300.0, state, mbps)
    step = batch_step(10, single, 64, batched, 32) * 32  # seconds a step of 10 sessions takes through the span
    unpriced = batch_step(10, 40.0, 64, 1300.0, 32) * 32
    assert step > 10 * state / (mbps * MBIT) > unpriced


def test_a_node_announces_its_figures_with_its_uplink_folded_in(default_store, tmp_path):
    """A real `Node` on the default model (SmolLM2, float32: 576 values of 4 bytes a token) with
    `--throughput 100 --upload-mbps 1`: 1 Mbit/s sends 54 states a second, so it announces 35.2 tokens/s."""
    args = ("--model", str(default_store.path), "--throughput", "100")
    sent = output_bytes(default_store.manifest.config.hidden_size, torch.finfo(torch.float32).bits // 8)
    assert sent == 2304
    priced = Node(config(*args, "--upload-mbps", "1", "--state-dir", str(tmp_path / "priced")))
    assert priced._throughput(None, 0) == (pytest.approx(1 / (1 / 100 + sent / MBIT)), (1, 0.0))  # type: ignore[arg-type]
    assert priced._throughput(None, 0)[0] == pytest.approx(35.2, abs=0.05)  # type: ignore[arg-type]
    unpriced = Node(config(*args, "--state-dir", str(tmp_path / "unpriced")))
    assert unpriced._throughput(None, 0) == (100.0, (1, 0.0))  # type: ignore[arg-type]


def test_the_help_explains_the_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["node", "run", "--help"])
    assert "--upload-mbps" in capsys.readouterr().out


def test_measured_figures_are_folded_too(default_store, tmp_path, monkeypatch):
    """`--throughput auto`: both measured figures (one session's, a batch's) of two real blocks, read from the
    machine-wide cache both nodes share, so the two nodes' figures differ only by the uplink."""
    monkeypatch.setenv("SWARMLM_HOME", str(tmp_path / "home"))
    stack = default_store.load_blocks(0, 2, "cpu", torch.float32)
    args = ("--model", str(default_store.path), "--max-batch-tokens", "8")
    single, (batch, batched) = Node(config(*args, "--state-dir", str(tmp_path / "a")))._throughput(stack, 8192)
    assert batch == 8 and batched > single > 0
    priced = Node(config(*args, "--upload-mbps", "2", "--state-dir", str(tmp_path / "b")))._throughput(stack, 8192)
    assert priced == (pytest.approx(through_uplink(single, 2304, 2.0), rel=1e-3),  # the cache keeps 2 decimals
                      (8, pytest.approx(through_uplink(batched, 2304, 2.0), rel=1e-3)))
    assert priced[0] < through_uplink(single, 2304, 1e6) * 0.9  # 2 Mbit/s: ~108 states a second
