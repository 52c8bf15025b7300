"""The machine-wide throughput cache: a figure is measured once per key and shared by every node."""

import json
from types import SimpleNamespace

from node import throughput
from shards.blocks import BlockStack
from tests.node.test_memory import TINY

SPAN = SimpleNamespace(start=0, end=10)  # what the log line names; `measure` is replaced


def test_a_figure_is_measured_once_then_read_and_others_figures_are_kept(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(throughput, "measure", lambda stack: calls.append("measured") or 12.345)
    cache = tmp_path / "home" / "throughput.json"
    assert throughput.cached_throughput(cache, "root:0:10:cpu:float32:1", SPAN) == 12.345
    assert throughput.cached_throughput(cache, "root:0:10:cpu:float32:1", SPAN) == 12.35  # read back
    assert calls == ["measured"]
    # another node stored its figure meanwhile: a new measurement keeps it
    stored = json.loads(cache.read_text())
    cache.write_text(json.dumps(dict(stored, **{"root:10:20:cpu:float32:1": 7.0})))
    throughput.cached_throughput(cache, "root:20:30:cpu:float32:1", SPAN)
    assert json.loads(cache.read_text()) == {"root:0:10:cpu:float32:1": 12.35, "root:10:20:cpu:float32:1": 7.0,
                                             "root:20:30:cpu:float32:1": 12.35}
    assert [p.name for p in cache.parent.iterdir()] == ["throughput.json"]  # no temporary file left


def test_a_corrupt_or_foreign_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "measure", lambda stack: 3.0)
    cache = tmp_path / "throughput.json"
    for text in ("{not json", "[1, 2]", json.dumps({"k": -1}), json.dumps({"k": "fast"})):
        cache.write_text(text)
        assert throughput.cached_throughput(cache, "k", SPAN) == 3.0
        assert json.loads(cache.read_text())["k"] == 3.0


def test_the_measured_batch_is_what_one_forward_and_the_pool_hold():
    assert throughput.batch_size(512, 8192) == throughput.MEASURED_BATCH
    assert throughput.batch_size(8, 8192) == 8  # --max-batch-tokens: decode rows of one forward
    assert throughput.batch_size(512, 300) == 300 // (throughput.BATCH_CONTEXT + throughput.BATCH_STEPS + 1)
    assert throughput.batch_size(512, 30) == 1 and throughput.batch_size(1, 8192) == 1  # none


def test_a_batch_is_measured_through_the_span_and_cached_apart(tmp_path):
    """A real (tiny, random) span: a batch's figure counts all its sessions' tokens, under its own key."""
    stack = BlockStack(TINY, 0, 2)
    cache = tmp_path / "throughput.json"
    single = throughput.cached_throughput(cache, "k", stack)
    batched = throughput.cached_throughput(cache, "k", stack, batch=8)
    assert single > 0 and batched > 0
    assert set(json.loads(cache.read_text())) == {"k", "k:batch8"}
    assert throughput.cached_throughput(cache, "k", stack, batch=8) == round(batched, 2)  # read back
