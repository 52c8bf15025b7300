"""A volunteer behind a home router serves, and relays fail as nodes do. The node at home learns
that nobody can dial it, reserves circuits on reachable peers, announces only its relay addresses, and
clients and its predecessor reach it through a relay, token-exact with local generation. A relay killed
mid-generation: the client's circuit to the node at home breaks, the client fails over (back to the
same node, through its other relay), the node reserves a circuit on another relay, and greedy output
equals local. A hostile relay that stalls (its processes stopped, connections open, nothing
forwarded): the client times out on it as on a stalled node, drops its connection to the node (libp2p
would reuse the dead circuit for every retry), tries it again within seconds (p2pd skips the dead circuit
only for its short dial backoff) and fails over through another relay, where the node
replaces the session the stalled stream still holds; a relay only carries encrypted libp2p streams,
so what it does cannot change an answer.

One lab serves the module (the tests that kill or stall a relay come last), every link 20 ms: the
bootstrap peer and three more relay peers (relay-1..3, bootstrap peers serving no blocks), node-1
(0:10), node-2 (10:20) behind NAT with all four relays as its initial peers, node-3 (20:30), all nodes
with --no-relay-service, so node-2's circuits run only through those four (public nodes offering relay
service by default are in test_nat_homes.py). With four relay candidates p2pd's AutoRelay reserves at
once instead of after 3 minutes. The relay tests' generations relay every hop through the client, so
the circuit the client holds to node-2 is the one a relay carries; its requests time out after
REQUEST_TIMEOUT. Nodes announce every ANNOUNCE_PERIOD: once a relay stalls, each of node-2's
announcements takes ~9 s (2.5 s measuring its neighbours, then a store that waits 3 s on the stalled
DHT peer twice), so with 5 s its record, living three periods, lapsed under CI load before the next
one landed and the client found no node for blocks 10:20.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from wan_client import WanClient
from wanlab import CLIENT, WanLab, swarm_hosts

from node.local_swarm import LocalNode, LocalSwarm
from node.reachable import RELAY_WAIT
from routing.reachability import relays_of
from tests.conftest import SWARMLM
from tests.waiting import until

PROMPT = "What is the capital of France?"
TOKENS = 12
REQUEST_TIMEOUT = 10.0  # s the client waits on a silent node (or a stalled relay) before failing over
ANNOUNCE_PERIOD = 10.0  # s between a node's announcements (see the module docstring)
RESERVE_WITHIN = 120.0  # s the node at home may take to hold a circuit on another relay after one dies

pytestmark = pytest.mark.swarm


@pytest.fixture(scope="module")
def relays(default_store, tmp_path_factory):
    hosts = swarm_hosts(3)
    hosts[1:1] = ["relay-1", "relay-2", "relay-3"]
    with WanLab(hosts, 20, 100, nat={"node-2": "cone"}) as lab, \
            LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("wan-relays"), placement=lab,
                       announce_period=ANNOUNCE_PERIOD, node_args=["--no-relay-service"],
                       ready_timeout=180 + RELAY_WAIT) as swarm:
        swarm.start_spans([])
        swarm.threads = 1
        for _ in range(3):
            swarm.spawn_relay()
        every_relay = [m for r in (swarm.bootstrap, *swarm.relays) for m in r.maddrs[:1]]
        swarm.await_nodes([swarm.spawn_node((0, 10), wait=False),
                           swarm.spawn_node((10, 20), extra=["--initial-peers", *every_relay], wait=False),
                           swarm.spawn_node((20, 30), wait=False)])
        with WanClient(lab, swarm.initial_peers, str(default_store.path), request_timeout=REQUEST_TIMEOUT,
                       log_level="INFO") as client:  # its failovers, in the output of a test that fails
            yield lab, swarm, client


@pytest.fixture(scope="module")
def local_ids(local_model):
    return local_model.generate(PROMPT, TOKENS, ignore_eos=True).token_ids


def test_the_node_at_home_knows_it_is_private_and_announces_its_relay(relays):
    lab, swarm, _ = relays
    home, public = swarm.nodes[1], [swarm.nodes[0], swarm.nodes[2]]
    relay_ids = {r.peer_id for r in (swarm.bootstrap, *swarm.relays)}
    assert home.maddrs and all("/p2p-circuit" in m for m in home.maddrs), home.maddrs
    assert 1 <= len(set(relays_of(home.maddrs))) and set(relays_of(home.maddrs)) <= relay_ids
    assert "reachability: unreachable" not in Path(home.log).read_text()  # it had a circuit before it was ready
    assert "reachability: via relay " in Path(home.log).read_text()
    for node in public:
        assert "reachability: reachable directly" in Path(node.log).read_text()
        assert not any("/p2p-circuit" in m for m in node.maddrs)
    assert lab.address("node-2").startswith("192.168.")


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "relayed"])
def test_a_node_behind_nat_serves_and_greedy_output_equals_local(relays, local_ids, push):
    _, swarm, client = relays
    g = client.generate(PROMPT, TOKENS, push=push, ignore_eos=True)
    assert g.token_ids == local_ids
    assert [hop["peer_id"] for hop in g.extra["chain"]] == [n.peer_id for n in swarm.nodes]
    assert g.extra["failovers"] == 0


def test_node_status_says_how_the_node_at_home_is_reached(relays):
    lab, swarm, _ = relays
    home = swarm.nodes[1]
    done = lab.run(CLIENT, [*SWARMLM, "node", "status", "--peer", home.maddrs[0], "--json"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reachability"].startswith("via relay ")


def held(home: LocalNode) -> tuple[str, ...]:
    """The relays the node at home last said it holds circuits on (its log's latest reachability line)."""
    lines = [line for line in Path(home.log).read_text().splitlines() if "reachability: via relay " in line]
    return tuple(lines[-1].split("via relay ", 1)[1].split(" (", 1)[0].split(", ")) if lines else ()


def relay_in_use(swarm: LocalSwarm, chain: list[dict]) -> LocalNode:
    """The relay process carrying the client's connection to the node at home."""
    home = swarm.nodes[1]
    via = relays_of(next(hop["via"] for hop in chain if hop["peer_id"] == home.peer_id))
    assert via, f"the client reaches {home.name} without a relay: {chain}"
    return next(r for r in (swarm.bootstrap, *swarm.relays) if r.peer_id == via[0])


def test_a_relay_killed_mid_generation_is_replaced_and_the_output_equals_local(relays, local_ids):
    _, swarm, client = relays
    home = swarm.nodes[1]
    before = held(home)
    assert len(before) >= 2, before
    relay_ids = {r.peer_id for r in (swarm.bootstrap, *swarm.relays)}
    assert set(before) <= relay_ids  # nodes with --no-relay-service grant no circuits
    chain = client.begin(PROMPT, TOKENS, pause_after=4, push=False, ignore_eos=True)
    relay = relay_in_use(swarm, chain)
    killed = time.monotonic()
    swarm.kill(relay)
    g = client.resume()
    assert g.token_ids == local_ids
    assert g.extra["failovers"] >= 1  # the circuit died under the session
    assert [hop["peer_id"] for hop in g.extra["chain"]] == [n.peer_id for n in swarm.nodes]
    assert until(lambda: relay.peer_id not in held(home) and set(held(home)) - set(before), timeout=RESERVE_WITHIN,
                 interval=0.1)
    assert set(held(home)) <= relay_ids
    print(f"{home.name} held {len(before)} circuits; {relay.name} killed; circuits on "
          f"{', '.join(held(home))} {time.monotonic() - killed:.0f} s later")


def test_a_relay_that_stalls_is_failed_over_like_a_stalled_node(relays, local_ids):
    _, swarm, client = relays
    chain = client.begin(PROMPT, TOKENS, pause_after=4, push=False, ignore_eos=True)
    relay = relay_in_use(swarm, chain)
    os.killpg(relay.pid, signal.SIGSTOP)  # sockets stay open; nothing is read or forwarded
    try:
        stalled = time.monotonic()
        try:
            g = client.resume()
        except Exception:  # what the node at home did meanwhile (its announcements, its circuits)
            print("".join(Path(swarm.nodes[1].log).read_text().splitlines(keepends=True)[-80:]))
            raise
        print(f"{relay.name} stalled; the generation finished {time.monotonic() - stalled:.0f} s later "
              f"with {g.extra['failovers']} failover(s)")
    finally:
        swarm.kill(relay)
    assert g.token_ids == local_ids
    assert g.extra["failovers"] >= 1
    assert [hop["peer_id"] for hop in g.extra["chain"]] == [n.peer_id for n in swarm.nodes]
