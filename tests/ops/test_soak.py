"""The soak script's loop, briefly, on the shared 3-node swarm: it counts, measures and judges."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


@pytest.fixture(scope="module")
def soak_module():
    sys.path.insert(0, str(SCRIPT.parent))  # scripts import their shared benchlib
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["soak"]
        sys.path.remove(str(SCRIPT.parent))


@pytest.mark.swarm
def test_a_short_soak_completes_generations_and_reports_latency_and_memory(soak_module, swarm3, remote_model):
    args = argparse.Namespace(duration=1.0, clients=2, max_new_tokens=4, max_errors=0, stop_grace=120.0)
    at_ready = {n.name: soak_module.group_rss(n) for n in swarm3.nodes}
    report = soak_module.soak(args, remote_model, list(swarm3.nodes), at_ready)
    assert report["problems"] == [] and report["errors"] == {}
    assert report["completed"] >= 2 and report["tokens"] == 4 * report["completed"]
    assert report["step_latency_ms"]["samples"] == 3 * report["completed"]
    assert set(report["memory"]) == {n.name for n in swarm3.nodes}
    assert all(m["end_mib"] > 50 for m in report["memory"].values())  # the node, its DHT child and p2pd
