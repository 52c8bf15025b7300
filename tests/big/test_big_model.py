"""A model no node can hold (`make bigmodel`, not in the default run): a 1.07B-parameter synthetic
Llama, packed in bounded memory, served end to end by nodes that each hold under half of it.

Nodes start one after another with `--blocks auto` and a `--max-memory` of 40% of the model, so
each takes the weakest-covered span its budget holds (counted in real bytes); greedy output
through the swarm equals the local reference's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.local_swarm import LocalSwarm
from shards.errors import ShardsError
from shards.local import LocalModel
from shards.paths import models_dir
from shards.store import ShardStore
from swarmlm.sdk import RemoteModel

pytestmark = pytest.mark.bigmodel
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "synthetic_model.py"
PACK_RSS_BOUND = 1.5 * 2**30  # bytes: the script's bound is its start RSS + 3 largest shards (~1.4 GiB)
PROMPT = "The swarm computes"


@pytest.fixture(scope="module")
def big_store() -> ShardStore:
    """The synthetic 1B store, packed once into the model cache (deterministic: same seed, same root)."""
    out = models_dir() / "synthetic-1b"
    try:
        return ShardStore(out)
    except ShardsError:
        pass
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--preset", "1b", "--json"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    print(f"packed {report}")
    assert report["peak_rss_bytes"] < PACK_RSS_BOUND
    return ShardStore(out)


def test_nodes_that_each_hold_under_half_serve_the_whole_model(big_store, tmp_path):
    total = big_store.manifest.total_size
    budget = int(total * 0.4)
    args = ["--blocks", "auto", "--max-memory", str(budget), "--cache-tokens", "256", "--rebalance-period", "0"]
    with LocalSwarm(str(big_store.path), tmp_path, ready_timeout=900) as swarm:
        swarm.start(0, big_store.manifest.num_blocks)
        nodes = []
        while not _covered(nodes, big_store.manifest.num_blocks):
            assert len(nodes) < 6, f"6 nodes still leave blocks unserved: {[n.blocks for n in nodes]}"
            nodes.append(swarm.spawn_node(extra=args))
        spans = [n.blocks for n in nodes]
        print(f"{len(nodes)} nodes of budget {budget / 2**30:.2f} GiB (model {total / 2**30:.2f} GiB): {spans}")
        assert all((b - a) * big_store.manifest.block(0).size < total / 2 for a, b in spans)
        with RemoteModel.connect(swarm.initial_peers, big_store.path, verify=False) as remote:
            got = remote.generate(PROMPT, 6, raw=True, ignore_eos=True).token_ids
    local = LocalModel.load(big_store)
    assert got == local.generate(PROMPT, 6, raw=True, ignore_eos=True).token_ids


def _covered(nodes, num_blocks: int) -> bool:  # noqa: ANN001
    served = {b for n in nodes for b in range(*n.blocks)}
    return served == set(range(num_blocks))
