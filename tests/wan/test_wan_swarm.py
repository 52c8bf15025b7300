"""A real swarm inside the lab: each process in its own namespace, every hop 40 ms away."""

from __future__ import annotations

import json

import pytest
from wanlab import CLIENT, WanLab, swarm_hosts

from node.local_swarm import SWARMLM, LocalSwarm

PROMPT = "What is the capital of France?"


@pytest.mark.swarm
def test_greedy_through_three_nodes_at_40ms_equals_local(default_store, local_model, tmp_path):
    with WanLab(swarm_hosts(3), rtt_ms=40, mbit=100) as lab, \
            LocalSwarm(str(default_store.path), tmp_path / "swarm", placement=lab) as swarm:
        swarm.start(3, default_store.manifest.num_blocks)
        assert [n.maddrs[0].split("/")[2] for n in swarm.nodes] == [lab.address(f"node-{i}") for i in (1, 2, 3)]
        done = lab.run(CLIENT, [*SWARMLM, "generate", "--model", str(default_store.path), "--peers",
                                *swarm.initial_peers, "--identity", str(tmp_path / "client.key"),
                                "--ledger", str(tmp_path / "client.sqlite"), "--json", "--max-new-tokens", "12",
                                PROMPT], timeout=300)
    assert done.returncode == 0, done.stderr
    remote = json.loads(done.stdout)
    local = local_model.generate(PROMPT, 12)
    assert remote["token_ids"] == local.token_ids
    assert remote["text"] == "The capital of France is Paris."
    assert [hop["blocks"] for hop in remote["chain"]] == [[0, 10], [10, 20], [20, 30]]
