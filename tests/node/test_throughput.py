"""The machine-wide throughput cache: a figure is measured once per key and shared by every node."""

import json
from types import SimpleNamespace

from node import throughput

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
