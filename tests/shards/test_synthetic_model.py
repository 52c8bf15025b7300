"""The synthetic model no node can hold: deterministic, finite through every layer, packed in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = str(REPO / "scripts" / "synthetic_model.py")
# Run in a fresh process: peak RSS (getrusage) is the whole process's, imports included.
QUANTIZE = """
import json, resource, sys
from shards.derive import quantize_store
from shards.manifest import Quantization
from shards.store import ShardStore
base = ShardStore(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
quantize_store(base, sys.argv[2], Quantization.of("int8"))
print(json.dumps({"rss_before_bytes": before,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _run(*args: str) -> dict:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_same_seed_gives_the_same_root_and_another_seed_another(tmp_path):
    roots = [_run(SCRIPT, "--out", str(tmp_path / f"s{i}"), "--preset", "tiny", "--seed", str(seed), "--json")["root"]
             for i, seed in enumerate((0, 0, 1))]
    assert roots[0] == roots[1] != roots[2]


def test_a_mid_size_model_packs_and_quantizes_in_bounded_memory_and_runs_finite(tmp_path):
    """About 210 million parameters (845 MB in float32): memory grows by at most 3x the largest shard."""
    packed = _run(SCRIPT, "--out", str(tmp_path / "mid"), "--preset", "mid", "--check", "--json")
    assert packed["parameters"] > 200e6
    largest, model = packed["largest_shard_bytes"], packed["store_bytes"]
    assert 3 * largest < model / 1.8  # holding the model would break the bound
    assert packed["peak_rss_bytes"] - packed["rss_before_bytes"] <= 3 * largest
    assert all(0.01 < rms < 100 for rms in packed["hidden_rms_per_block"])

    quantized = _run("-c", QUANTIZE, str(tmp_path / "mid"), str(tmp_path / "mid-int8"))
    assert quantized["peak_rss_bytes"] - quantized["rss_before_bytes"] <= 3 * largest
