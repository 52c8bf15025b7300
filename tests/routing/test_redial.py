"""A peer that went silent is dialled afresh: the client drops its connections to it, so the next
stream does not reuse the path that stalled (a relay that stopped forwarding with its connections open)."""

from __future__ import annotations

import asyncio

from hivemind.p2p import P2P

from routing.chain import RELAYED_RETRIES, RELAYED_RETRY_S, RemoteRunner, avoid_unreachable
from routing.client import PeerLink
from routing.errors import PeerFailure, PeerSilent
from routing.planner import Hop
from routing.view import Bans
from tests.routing.nodes import Clock, node
from tests.routing.test_failover import runner

HANDLER = "test.echo"


async def _echo(_info, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readexactly(4))
    await writer.drain()
    writer.close()


async def _connected(p2p: P2P) -> set[str]:
    return {p.peer_id.to_base58() for p in await p2p._client.list_peers()}


async def test_redial_drops_the_connection_and_the_next_stream_dials_again() -> None:
    ours, theirs = [await P2P.create(host_maddrs=["/ip4/127.0.0.1/tcp/0"]) for _ in range(2)]
    try:
        await theirs.add_binary_stream_handler(HANDLER, _echo)
        peer, link = theirs.peer_id.to_base58(), PeerLink(ours, request_timeout=10.0)
        link.remember(peer, [str(m) for m in await theirs.get_visible_maddrs()])

        async def echoed() -> bytes:
            reader, writer = await link.open_stream(peer, HANDLER)
            writer.write(b"ping")
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.readexactly(4), 10.0)
            finally:
                writer.close()

        assert await echoed() == b"ping" and peer in await _connected(ours)
        await link.redial(peer)
        assert peer not in await _connected(ours)
        assert await echoed() == b"ping" and peer in await _connected(ours)  # dialled at its addresses again
        await link.redial("12D3KooWBogusPeerIdThatIsNotConnectedAnywhere1")  # anything else: nothing to drop
    finally:
        await asyncio.gather(ours.shutdown(), theirs.shutdown())


class _Dialler:
    """The link's one call the runner makes on a failure; what it was asked to redial."""

    def __init__(self) -> None:
        self.redialled: list[str] = []

    async def redial(self, peer: str) -> None:
        self.redialled.append(peer)


def test_only_a_silent_node_is_dialled_afresh() -> None:
    r: RemoteRunner = runner(node("a", 0, 30), node("b", 0, 30), clock=Clock())
    r.client = dialler = _Dialler()  # type: ignore[assignment]
    asyncio.run(r._note_failure("a", 0, 30, PeerFailure("a", "stream closed")))
    asyncio.run(r._note_failure("b", 0, 30, PeerSilent("b", "no reply within 10s")))
    assert dialler.redialled == ["b"]


def test_a_relayed_node_that_stayed_silent_is_tried_again_soon_a_few_times_and_a_direct_one_is_banned() -> None:
    """An open that timed out on a node reached only through relays may have met a stalled relay, which p2pd
    skips for its own few seconds of dial backoff: the node is tried again after `RELAYED_RETRY_S`, each try
    counted, and from `RELAYED_RETRIES` failures on it is banned with backoff like any node (an identity that
    never opens a stream holds a client no longer than before); a direct node, or a relayed one that refused,
    is banned with backoff at once."""
    bans = Bans(clock=Clock())
    circuit = "/ip4/11.77.0.2/tcp/4000/p2p/R/p2p-circuit/p2p/"
    home = Hop("h", 0, 30, node("h", 0, 30, maddrs=[circuit + "h"]))
    direct = Hop("d", 0, 30, node("d", 0, 30, maddrs=["/ip4/11.77.0.3/tcp/4000/p2p/d"]))
    silent = PeerSilent("h", "cannot open swarmlm.inference within 10s")
    assert [avoid_unreachable(bans, home, silent) for _ in range(RELAYED_RETRIES)] == [RELAYED_RETRY_S] * RELAYED_RETRIES
    assert bans.failures("h") == RELAYED_RETRIES and "h" in bans
    assert avoid_unreachable(bans, home, silent) == 5.0 * 2 ** RELAYED_RETRIES
    assert [avoid_unreachable(bans, direct, PeerSilent("d", "cannot open")) for _ in range(3)] == [5.0, 10.0, 20.0]
    other = Hop("o", 0, 30, node("o", 0, 30, maddrs=[circuit + "o"]))
    assert avoid_unreachable(bans, other, PeerFailure("o", "cannot open swarmlm.inference: refused")) == 5.0
