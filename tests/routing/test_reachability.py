"""What a node announces and asks for, by how peers reach it (pure functions; the lab tests the rest)."""

from __future__ import annotations

import asyncio

import pytest

from routing import reachability as reach
from routing.errors import ProtocolError
from routing.reachability import Reachability, RelayLimits

RELAY = "12D3KooWRelay"
OWN = ["/ip4/192.168.2.2/tcp/4100/p2p/12D3KooWMe",
       f"/ip4/11.77.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit/p2p/12D3KooWMe"]


def test_a_private_node_announces_only_its_circuits_a_reachable_one_everything():
    assert reach.to_announce(OWN, Reachability(False, (RELAY,))) == OWN[1:]
    assert reach.to_announce(OWN, Reachability(True)) == OWN
    assert reach.to_announce(OWN[:1], Reachability(False)) == OWN[:1]  # no circuit yet: nothing better to say


@pytest.mark.parametrize("state, says, kind", [
    (Reachability(True), "reachable directly", "direct"),
    (Reachability(False, (RELAY,)), f"via relay {RELAY}", "relay"),
    (Reachability(False), "unreachable", "unreachable"),
    (Reachability(None), "not known yet", "unknown"),
])
def test_reachability_reads_as_the_log_and_status_say_it(state, says, kind):
    assert (state.describe(), state.kind) == (says, kind)


def test_relays_and_ports_are_read_from_the_addresses():
    assert reach.relays_of(OWN + OWN) == (RELAY,)
    assert reach.listen_ports(OWN) == [4100]  # a circuit's port is the relay's, not ours


@pytest.mark.parametrize("ports", [[0], [70000], ["80"], list(range(1, 6)), "80"])
def test_a_dialback_request_names_at_most_four_real_ports(ports):
    with pytest.raises(ProtocolError):
        reach.requested_ports({"type": "dialback", "v": 1, "ports": ports})


def test_relay_limits_become_p2pd_flags_and_opting_out_turns_the_service_off():
    assert RelayLimits().p2pd_flags(False) == {"relayService": True, "relayMaxReservations": 0, "relayMaxCircuits": 0}
    flags = RelayLimits(circuits_per_peer=4, seconds_per_circuit=60).p2pd_flags(True)
    assert flags["relayMaxCircuits"] == 4 and flags["relayTimeLimit"] == "60s" and flags["relayService"] is True
    assert flags["relayBufferSize"] == 64 << 10


def test_a_dial_back_to_a_closed_port_says_closed_and_to_a_listener_open():
    async def run() -> tuple[bool, bool]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            opened = await reach.dial("127.0.0.1", port)
        return opened, await reach.dial("127.0.0.1", port)

    assert asyncio.run(run()) == (True, False)
