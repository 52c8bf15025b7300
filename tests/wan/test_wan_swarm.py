"""A real swarm inside the lab: each process in its own namespace, every hop 40 ms away.

One lab serves the module: nodes for blocks 0:10, 10:20 and 20:30, a spare for 10:20, and a client
(scripts/wan_client.py) driven from here. The test that kills a node comes last; whichever middle
node it kills, the other one still serves the tests before it.
"""

from __future__ import annotations

import json

import pytest
from wan_client import swarm_in_lab
from wanlab import CLIENT

from tests.conftest import SWARMLM

PROMPT = "What is the capital of France?"
SPANS = [(0, 10), (10, 20), (20, 30), (10, 20)]

pytestmark = pytest.mark.swarm


@pytest.fixture(scope="module")
def lab_swarm(default_store, tmp_path_factory):
    with swarm_in_lab(str(default_store.path), tmp_path_factory.mktemp("wan-swarm"), SPANS, rtt_ms=40) as running:
        yield running


@pytest.fixture(scope="module")
def local_ids(local_model):
    return local_model.generate(PROMPT, 24, ignore_eos=True).token_ids


def test_greedy_through_three_nodes_at_40ms_equals_local(lab_swarm, default_store, local_model, tmp_path):
    lab, swarm, _ = lab_swarm
    assert [n.maddrs[0].split("/")[2] for n in swarm.nodes] == [lab.address(f"node-{i}") for i in (1, 2, 3, 4)]
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


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "relayed"])
def test_pushed_and_relayed_greedy_at_40ms_equal_local(lab_swarm, local_ids, push):
    _, _, client = lab_swarm
    g = client.generate(PROMPT, 24, push=push, ignore_eos=True)
    assert g.token_ids == local_ids
    assert [hop["blocks"] for hop in g.extra["chain"]] == [[0, 10], [10, 20], [20, 30]]
    assert (g.extra["failovers"], g.extra["relayed_steps"]) == (0, 0)  # pushed: no hop fell back to the client


def test_killing_the_middle_node_during_a_pushed_generation_changes_no_token(lab_swarm, local_ids):
    _, swarm, client = lab_swarm
    chain = client.begin(PROMPT, 24, pause_after=5, push=True, ignore_eos=True)
    killed = chain[1]["peer_id"]
    swarm.kill(next(n for n in swarm.nodes if n.peer_id == killed))
    g = client.resume()
    assert g.token_ids == local_ids
    assert g.extra["failovers"] == 1
    assert [hop["blocks"] for hop in g.extra["chain"]] == [[0, 10], [10, 20], [20, 30]]
    assert killed not in {hop["peer_id"] for hop in g.extra["chain"]}
