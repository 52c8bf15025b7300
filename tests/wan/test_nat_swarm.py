"""A volunteer behind a home router serves: it learns that nobody can dial it, reserves circuits on
reachable peers (p2pd's AutoRelay keeps two), announces only its relay addresses, and clients and
its predecessor reach it through a relay, token-exact with local generation. Its start takes about
3 minutes: AutoRelay reserves after 3 minutes when it knows fewer than 4 relay candidates.

One lab serves the module: bootstrap, node-1 (0:10), node-2 (10:20) behind NAT, node-3 (20:30), and
a client, every link 20 ms.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wan_client import swarm_in_lab
from wanlab import CLIENT

from tests.conftest import SWARMLM
from routing.reachability import relays_of

PROMPT = "What is the capital of France?"
SPANS = [(0, 10), (10, 20), (20, 30)]
HOME = "node-2"

pytestmark = pytest.mark.swarm


@pytest.fixture(scope="module")
def nat_swarm(default_store, tmp_path_factory):
    with swarm_in_lab(str(default_store.path), tmp_path_factory.mktemp("wan-nat"), SPANS, rtt_ms=20,
                      nat={HOME: "cone"}) as running:
        yield running


@pytest.fixture(scope="module")
def local_ids(local_model):
    return local_model.generate(PROMPT, 16, ignore_eos=True).token_ids


def test_the_node_at_home_knows_it_is_private_and_announces_its_relay(nat_swarm):
    lab, swarm, _ = nat_swarm
    home, public = swarm.nodes[1], [swarm.nodes[0], swarm.nodes[2]]
    reachable = {swarm.bootstrap.peer_id} | {n.peer_id for n in public}
    assert home.maddrs and all("/p2p-circuit" in m for m in home.maddrs), home.maddrs
    assert 1 <= len(set(relays_of(home.maddrs))) and set(relays_of(home.maddrs)) <= reachable
    assert "reachability: unreachable" not in Path(home.log).read_text()  # it had a circuit before it was ready
    assert "reachability: via relay " in Path(home.log).read_text()
    for node in public:
        assert "reachability: reachable directly" in Path(node.log).read_text()
        assert not any("/p2p-circuit" in m for m in node.maddrs)
    assert lab.address(HOME).startswith("192.168.")


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "relayed"])
def test_a_node_behind_nat_serves_and_greedy_output_equals_local(nat_swarm, local_ids, push):
    _, swarm, client = nat_swarm
    g = client.generate(PROMPT, 16, push=push, ignore_eos=True)
    assert g.token_ids == local_ids
    assert [hop["peer_id"] for hop in g.extra["chain"]] == [n.peer_id for n in swarm.nodes]
    assert g.extra["failovers"] == 0


def test_node_status_says_how_the_node_at_home_is_reached(nat_swarm):
    lab, swarm, _ = nat_swarm
    home = swarm.nodes[1]
    done = lab.run(CLIENT, [*SWARMLM, "node", "status", "--peer", home.maddrs[0], "--json"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reachability"].startswith("via relay ")
