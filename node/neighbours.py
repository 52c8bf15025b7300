"""Round trips to the nodes serving the blocks right after ours, for latency-aware routing.

A client cannot measure node-to-node links; each node measures its own to the nodes it could push
to (those serving the block where its span ends) over the push streams it would use, and announces
them in its DHT record. Clients treat these as claims: they bound them by what they measure
themselves (routing/planner.py). Measuring also keeps the push streams open, so a session's first
pushed step never pays for opening one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable, Mapping

from routing.errors import RoutingError
from routing.records import MAX_RTT_MS, ServerRecord

from .push import PushLinks

log = logging.getLogger(__name__)
MAX_NEIGHBOURS = 16  # the record field's bound
SMOOTHING = 0.5  # weight of a new measurement in the moving average


class Neighbours:
    def __init__(self, pushes: PushLinks, own: str) -> None:
        self.pushes, self.own = pushes, own
        self.rtt: dict[str, float] = {}  # peer -> seconds, smoothed

    async def measure(self, records: Iterable[ServerRecord], end: int, timeout: float) -> None:
        """Ping (over push streams) up to MAX_NEIGHBOURS online nodes serving block `end`, each for at most
        `timeout` seconds: a dead neighbour is dropped, it does not hold up the others."""
        nexts = to_measure(records, self.own, end, self.rtt)
        results = await asyncio.gather(*(asyncio.wait_for(self.pushes.ping(r.peer_id, r.maddrs), timeout)
                                         for r in nexts), return_exceptions=True)
        seen = set()
        for record, result in zip(nexts, results):
            if isinstance(result, (RoutingError, OSError, asyncio.TimeoutError)):
                log.debug("neighbour %s did not answer a ping: %s", record.peer_id[-8:], result)
                continue
            if isinstance(result, BaseException):
                raise result
            old = self.rtt.get(record.peer_id)
            self.rtt[record.peer_id] = result if old is None else SMOOTHING * result + (1 - SMOOTHING) * old
            seen.add(record.peer_id)
        self.rtt = {p: v for p, v in self.rtt.items() if p in seen}

    def announced(self) -> dict[str, float]:
        return announced(self.rtt)


def to_measure(records: Iterable[ServerRecord], own: str, end: int, known: Mapping[str, float]) -> list[ServerRecord]:
    """Which nodes serving block `end` to ping: up to MAX_NEIGHBOURS online ones, those measured before
    first (nearest first), so a node keeps the links it knows and learns new ones only for those it lost."""
    nexts = [r for r in records if r.peer_id != own and r.is_serving and r.start <= end < r.end]
    nexts.sort(key=lambda r: (r.peer_id not in known, known.get(r.peer_id, 0.0)))
    return nexts[:MAX_NEIGHBOURS]


def announced(rtt: Mapping[str, float]) -> dict[str, float]:
    """Milliseconds per neighbour (from seconds), as the DHT record carries them."""
    return {peer: round(min(seconds * 1000, MAX_RTT_MS), 2) for peer, seconds in rtt.items()}


def neighbour_blocks(start: int, end: int, num_blocks: int, private: bool) -> list[int]:
    """The blocks an announcement reads for a node serving `start:end`: the one after its span (whose
    servers it measures) and, when it is private, the one before (whose servers push to it and are
    met directly: node/reachable.py)."""
    return [b for b in (start - 1 if private else -1, end) if 0 <= b < num_blocks]
