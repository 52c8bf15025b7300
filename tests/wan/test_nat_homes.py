"""Everyone at home but the first node: node-2 behind a port-keeping NAT, node-3 and the client behind
symmetric NATs (a fresh port per connection). The two private nodes are adjacent, so every pushed hop
between them runs relay to relay; the client reaches both through their circuits.

Marked `long` (`make long`): about 6 minutes, most of it p2pd's AutoRelay waiting 3 minutes before its
first reservation; CI runs the short form, one private node (test_nat_swarm.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from wan_client import swarm_in_lab
from wanlab import CLIENT

from routing.reachability import relays_of

PROMPT = "What is the capital of France?"
HOMES = {"node-2": "cone", "node-3": "symmetric", CLIENT: "symmetric"}

pytestmark = [pytest.mark.swarm, pytest.mark.long]


@pytest.fixture(scope="module")
def homes(default_store, tmp_path_factory):
    with swarm_in_lab(str(default_store.path), tmp_path_factory.mktemp("wan-homes"),
                      [(0, 10), (10, 20), (20, 30)], rtt_ms=20, nat=HOMES) as running:
        yield running


def test_two_adjacent_private_nodes_push_through_relays_to_a_client_at_home(homes, local_model):
    lab, swarm, client = homes
    for node in swarm.nodes[1:]:
        assert node.maddrs and relays_of(node.maddrs) and all("/p2p-circuit" in m for m in node.maddrs)
        assert "reachability: via relay " in Path(node.log).read_text()
    g = client.generate(PROMPT, 16, push=True, ignore_eos=True)
    assert g.token_ids == local_model.generate(PROMPT, 16, ignore_eos=True).token_ids
    assert [hop["peer_id"] for hop in g.extra["chain"]] == [n.peer_id for n in swarm.nodes]
    assert (g.extra["failovers"], g.extra["relayed_steps"]) == (0, 0)  # node-2 pushed to node-3 every step
