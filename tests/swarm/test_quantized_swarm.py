"""Quantized spans in a real swarm: routed by the base root, checked against weights the client derives."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from ledger.store import Ledger
from node.local_swarm import LocalSwarm
from routing.errors import NoRouteError
from shards.derive import derived_store
from shards.manifest import Quantization
from swarmlm.sdk import RemoteModel
from tests.conftest import FIXED_THROUGHPUT

PROMPT = "What is the capital of France?"
TEXTS = ["The quick brown fox jumps over the lazy dog because it wanted to see the world.",
         "Water boils at one hundred degrees Celsius at sea level, and freezes at zero.",
         "In 1969, two astronauts walked on the Moon while a third stayed in orbit."]
LIAR = [sys.executable, str(Path(__file__).with_name("lying_quant_node.py"))]


@pytest.fixture(scope="module")
def mixed(default_store, tmp_path_factory):
    """float32 0:10, int8 10:20, nf4 20:30, and a second int8 node over 10:20 (a same-weights checker)."""
    swarm = LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("quant"), node_args=FIXED_THROUGHPUT)
    with swarm:
        swarm.start(0, 30)
        nodes = {"float32": swarm.spawn_node((0, 10), wait=False),
                 "int8": swarm.spawn_node((10, 20), extra=["--quant", "int8"], wait=False),
                 "nf4": swarm.spawn_node((20, 30), extra=["--quant", "nf4"], wait=False),
                 "int8-b": swarm.spawn_node((10, 20), extra=["--quant", "int8"], wait=False)}
        swarm.await_nodes(list(nodes.values()))
        yield swarm, nodes


def _next_token_agreement(model, local_model) -> float:
    """Share of positions where the chain's greedy next token equals float32's, over TEXTS."""
    same = total = 0
    for text in TEXTS:
        ids = local_model.tokenizer(text)["input_ids"]
        with torch.inference_mode():
            ours = local_model.head.logits(local_model.stack(local_model.head.embed(torch.tensor([ids])))).argmax(-1)
            with model.inference_session(max_length=len(ids) + 1) as s:
                hidden = s.runner.forward(model.head.embed(torch.tensor([ids])), 0)
                theirs = model.head.logits(hidden).argmax(-1)
        same += int((ours == theirs).sum())
        total += len(ids)
    return same / total


def test_a_mixed_chain_generates_and_names_its_weights(mixed, default_store, local_model, capsys):
    swarm, nodes = mixed
    with pytest.raises(NoRouteError):  # nf4 only when asked: without it nothing serves 20:30
        RemoteModel.connect(swarm.initial_peers, default_store.path, verify=False)
    with RemoteModel.connect(swarm.initial_peers, default_store.path, accept_quantized=("int8", "nf4")) as model:
        g = model.generate(PROMPT, 12)
        schemes = {r.peer_id: r.scheme for r in model.view.records.values()}
        agreement = _next_token_agreement(model, local_model)
    print(f"mixed float32/int8/nf4 chain: next-token agreement with float32 {agreement:.1%}")
    assert g.token_ids and g.text
    assert sorted(schemes[c["peer_id"]] for c in g.extra["chain"]) == ["", "int8", "nf4"]
    assert agreement > 0.5
    int8 = derived_store(default_store, Quantization.of("int8"))
    with Ledger(nodes["int8"].ledger) as ledger:
        load = [r.decode() for r in ledger.query(kind="load")][-1]
    assert (load.manifest_root.hex(), load.base_root.hex(), load.scheme) == (int8.root, default_store.root, "int8")


@pytest.mark.parametrize("checks", [60, pytest.param(200, marks=pytest.mark.long)])
def test_honest_nodes_of_every_scheme_are_never_accused(mixed, default_store, checks):
    """Every step of every span checked: a generation of 24 tokens makes about 70 checks."""
    swarm, _ = mixed
    with RemoteModel.connect(swarm.initial_peers, default_store.path, accept_quantized=("int8", "nf4"),
                             spot_check_rate=1.0, seed=1) as model:
        for _ in range(checks // 10):  # bounded: a generation that checks nothing fails below, not hangs
            if model.verifier.stats.checks >= checks:
                break
            model.generate(PROMPT, 24, ignore_eos=True)
        stats = model.verifier.stats
    assert stats.checks >= checks and stats.mismatches == 0 and stats.convicted == []


def test_a_node_lying_about_its_scheme_is_caught(mixed, default_store):
    swarm, nodes = mixed
    liar = swarm.spawn_node((10, 20), extra=["--quant", "int8", "--throughput", "10000"], program=LIAR)
    try:
        with RemoteModel.connect(swarm.initial_peers, default_store.path, accept_quantized=("int8", "nf4"),
                                 spot_check_rate=1.0) as model:
            model.view.bans.ban_forever(nodes["int8"].peer_id)  # the liar serves 10:20, checked by int8-b
            g = model.generate(PROMPT, 8)
            convicted = model.verifier.stats.convicted
        with RemoteModel.connect(swarm.initial_peers, default_store.path, accept_quantized=("int8", "nf4"),
                                 verify=False) as honest:
            honest.view.bans.ban_forever(liar.peer_id)
            expected = honest.generate(PROMPT, 8).token_ids
    finally:
        swarm.kill(liar)
    assert convicted == [liar.peer_id]
    assert g.token_ids == expected


def test_placement_counts_the_real_bytes_of_quantized_blocks(mixed, default_store):
    swarm, _ = mixed
    budget = ["--blocks", "auto", "--max-memory", "100MiB", "--cache-tokens", "1024", "--rebalance-period", "0"]
    full, small = swarm.await_nodes([swarm.spawn_node(extra=budget, wait=False),
                                    swarm.spawn_node(extra=[*budget, "--quant", "int8"], wait=False)])
    logs = {name: Path(n.log).read_text() for name, n in (("float32", full), ("int8", small))}
    held = {name: int(re.search(r"holds (\d+) blocks", text).group(1)) for name, text in logs.items()}
    assert 0 < held["float32"] < held["int8"] <= 30
    assert held["int8"] >= 2 * held["float32"]  # an int8 block is 3.8 MiB to float32's 13.5; the cache is the same
