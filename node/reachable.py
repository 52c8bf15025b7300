"""How peers reach this node, kept current: a peer's dial-back says whether they can directly, p2pd's
AutoRelay holds circuits when they cannot, and the node announces only addresses that work.

Checked at start (waiting a while for a first circuit when private, so the node's first record
is dialable) and every REACHABILITY_PERIOD; the announced addresses follow p2pd's at every announcement.
Each change is logged once: "reachability: reachable directly" / "via relay R" / "unreachable".

A direct connection beats a relay whenever one side is reachable, and this p2pd cannot punch holes:
so a private node dials the reachable nodes that push into its first block itself, before it
announces and at every announcement. Their pushes then open streams on that connection (libp2p
prefers a direct connection to a relayed one) instead of on a circuit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Collection, Iterable

from hivemind.p2p import P2P

from routing import reachability as reach
from routing.client import PeerLink
from routing.errors import RoutingError
from routing.planner import is_relayed
from routing.reachability import Reachability
from routing.records import ServerRecord

log = logging.getLogger(__name__)
REACHABILITY_PERIOD = 300.0  # s between dial-backs: a home router's mapping changes rarely
# s a private node waits at start for its first circuit before it announces: p2pd's AutoRelay reserves
# once it knows 4 relay candidates or after 3 minutes, and AutoNAT takes ~15 s to call the node private
MAX_PUSHERS_MET = 8  # dials per announcement: records are free, so k fake pushers must not cost k dials
RELAY_WAIT = 240.0


class Reachable:
    def __init__(self, p2p: P2P, link: PeerLink, peers: list[str], mode: str) -> None:
        """`peers`: peer IDs to ask for a dial-back (the initial peers); `mode`: auto, public or private."""
        self.p2p, self.link, self.peers, self.mode = p2p, link, peers, mode
        self.state = Reachability(None)
        self.own: list[str] = []  # p2pd's addresses for us, circuits included
        self.met: set[str] = set()  # predecessors we hold a direct connection to

    @property
    def maddrs(self) -> list[str]:
        """The addresses to announce."""
        return reach.to_announce(self.own, self.state)

    async def check(self, relay_wait: float = 0.0) -> Reachability:
        """Ask for a dial-back (unless the mode says), refresh the addresses; when private, wait up to
        `relay_wait` s for a circuit."""
        await self._refresh_own()
        direct = {"public": True, "private": False}.get(self.mode)
        if direct is None:
            direct = await self._dialback()
        deadline = time.monotonic() + relay_wait
        while direct is False and not reach.relays_of(self.own) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            await self._refresh_own()
        self._set(Reachability(direct, reach.relays_of(self.own)))
        return self.state

    async def refresh(self) -> None:
        """Follow p2pd's addresses (a circuit reserved or lost) without a new dial-back."""
        await self._refresh_own()
        self._set(Reachability(self.state.direct, reach.relays_of(self.own)))

    async def meet_predecessors(self, records: Iterable[ServerRecord], own: str, start: int) -> None:
        """When private, connect directly to the reachable nodes serving block `start - 1` (those that
        push to us), so their pushes need no relay."""
        if self.state.direct is not False:
            return
        pushers = direct_pushers(records, own, start, self.met)
        connected = await asyncio.gather(*(self.link.connect(r.peer_id, r.maddrs) for r in pushers))
        for record, ok in zip(pushers, connected):
            if ok and record.peer_id not in self.met:
                log.info("connected directly to %s, which pushes to us: its pushes need no relay",
                         record.peer_id[-8:])
        self.met = {r.peer_id for r, ok in zip(pushers, connected) if ok}

    async def _refresh_own(self) -> None:
        try:
            self.own = [str(m) for m in await self.p2p.get_visible_maddrs(latest=True)]
        except Exception as e:  # p2pd busy or restarting: keep what we had
            log.info("could not read this node's addresses from p2pd: %s", e or type(e).__name__)

    async def _dialback(self) -> bool | None:
        """The first answering peer's verdict on our listening ports; None if none answered."""
        ports = reach.listen_ports(self.own)
        for peer in self.peers:
            try:
                return await reach.ask(self.link, peer, ports)
            except (RoutingError, OSError, asyncio.TimeoutError) as e:
                log.info("dial-back by %s failed: %s", peer[-8:], e)
        return None

    def _set(self, state: Reachability) -> None:
        if state != self.state:
            log.info("reachability: %s%s", state.describe(), _announcing(self.own, state))
        self.state = state


def direct_pushers(records: Iterable[ServerRecord], own: str, start: int,
                   met: Collection[str] = ()) -> list[ServerRecord]:
    """The serving nodes that push into block `start` (they serve block `start - 1`) and can be dialed
    directly (they announce an address that is not a relay's); at most MAX_PUSHERS_MET of them, those
    already met first, so fresh fake records cannot push real neighbours out."""
    found = [r for r in records if r.peer_id != own and r.is_serving and r.start < start <= r.end
             and r.maddrs and not is_relayed(r)]
    return sorted(found, key=lambda r: r.peer_id not in met)[:MAX_PUSHERS_MET]


def _announcing(own: list[str], state: Reachability) -> str:
    shown = reach.to_announce(own, state)
    return f" (announcing {', '.join(shown)})" if shown else ""
