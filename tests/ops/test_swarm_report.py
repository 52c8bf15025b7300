"""`swarm status` and the dashboard say how each node is reached: directly, or through the relays a node
at home announces (its record holds only circuit addresses)."""

from __future__ import annotations

from types import SimpleNamespace

from swarmlm.swarm_status import swarm_report
from tests.routing.nodes import node

RELAY_A, RELAY_B = "12D3KooWRelayAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "12D3KooWRelayBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
MANIFEST = SimpleNamespace(num_blocks=30, root="ab" * 32, name="test")


def test_a_node_at_home_is_reported_via_its_relays_and_a_public_one_as_direct() -> None:
    home = node("home", 10, 20, maddrs=[f"/ip4/11.77.0.1/tcp/4001/p2p/{RELAY_A}/p2p-circuit",
                                        f"/ip4/11.77.0.3/tcp/4001/p2p/{RELAY_B}/p2p-circuit",
                                        f"/ip4/11.77.0.1/udp/4001/quic/p2p/{RELAY_A}/p2p-circuit"])
    public = node("public", 0, 10, maddrs=["/ip4/11.77.0.2/tcp/4001"])
    unknown = node("silent", 20, 30)  # announces no address: nothing says it needs a relay
    report = swarm_report({n.peer_id: n for n in (home, public, unknown)}, MANIFEST, {"home", "public", "silent"})
    by_peer = {n["peer_id"]: n for n in report["nodes"]}
    assert (by_peer["home"]["reach"], by_peer["home"]["relays"]) == ("via relay", [RELAY_A, RELAY_B])
    assert (by_peer["public"]["reach"], by_peer["public"]["relays"]) == ("direct", [])
    assert by_peer["silent"]["reach"] == "direct"
