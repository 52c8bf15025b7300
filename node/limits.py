"""Per-client limits: no one peer may take the whole node.

A node counts, per client peer, its open streams and its sessions; each has a cap
(`--peer-max-streams`, `--peer-max-sessions`), and so has
the rate at which it opens sessions (`--peer-opens-per-minute`: each session that computes is a
signed ledger entry); going over one is a `peer_limit` error to that peer only. Cache pages per peer
are counted and shared fairly by node/admission.py (`--peer-cache-tokens` and a share that shrinks
with the peers wanting pages); queued compute per peer is capped by the scheduler
(`--peer-queue-tokens`, a `busy` error). Identities are free, so these caps bound what
one identity can take; the global caps (the cache pool, the frame read budget, fair turns in the
scheduler) bound what many can.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from routing.errors import ErrorCode, ProtocolError


@dataclass(frozen=True)
class PeerLimits:
    streams: int
    sessions: int
    opens_per_minute: int = 240


MAX_TRACKED_OPENERS = 10_000  # past this many peers, those whose bucket has refilled are forgotten


class PeerBook:
    """What each client peer holds on this node right now, and how fast it has been opening sessions."""

    def __init__(self, limits: PeerLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.clock = limits, clock
        self.streams: Counter[str] = Counter()
        self.sessions: Counter[str] = Counter()
        self._opens: dict[str, tuple[float, float]] = {}  # peer -> (opens left in its bucket, when counted)

    @contextmanager
    def stream(self, peer: str) -> Iterator[None]:
        if self.streams[peer] >= self.limits.streams:
            raise ProtocolError(ErrorCode.PEER_LIMIT, f"you already have {self.streams[peer]} streams open to this "
                                                      f"node (limit {self.limits.streams}); close some first")
        self.streams[peer] += 1
        try:
            yield
        finally:
            self._drop(self.streams, peer, 1)

    def add_session(self, peer: str) -> None:
        self._take_open(peer)
        if self.sessions[peer] >= self.limits.sessions:
            raise ProtocolError(ErrorCode.PEER_LIMIT, f"you already have {self.sessions[peer]} sessions on this node "
                                                      f"(limit {self.limits.sessions}); close one or use another node")
        self.sessions[peer] += 1

    def _take_open(self, peer: str) -> None:
        """A token bucket per peer: `opens_per_minute`, refilled continuously, bursting to as many."""
        rate, now = self.limits.opens_per_minute, self.clock()
        left, then = self._opens.get(peer, (float(rate), now))
        left = min(float(rate), left + (now - then) * rate / 60)
        if left < 1:
            wait = (1 - left) * 60 / rate
            raise ProtocolError(ErrorCode.PEER_LIMIT, f"you opened sessions faster than {rate} a minute on this node; "
                                                      f"try again in {wait:.1f}s")
        if len(self._opens) >= MAX_TRACKED_OPENERS and peer not in self._opens:
            self._forget_refilled(now)
        self._opens[peer] = (left - 1, now)

    def _forget_refilled(self, now: float) -> None:
        rate = self.limits.opens_per_minute
        for peer, (left, then) in list(self._opens.items()):
            if left + (now - then) * rate / 60 >= rate:
                del self._opens[peer]

    def remove_session(self, peer: str) -> None:
        self._drop(self.sessions, peer, 1)

    @staticmethod
    def _drop(counter: Counter[str], peer: str, n: int) -> None:
        counter[peer] -= n
        if counter[peer] <= 0:
            del counter[peer]
