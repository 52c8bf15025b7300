"""Per-client limits: no one peer may take the whole node.

A node counts, per client peer, its open streams, its sessions and the cache pages they hold;
each has a cap (`--peer-max-streams`, `--peer-max-sessions`, `--peer-cache-tokens`), and going
over it is a `peer_limit` error to that peer only. Queued compute per peer is capped by the
scheduler (`--peer-queue-tokens`, a `busy` error). Identities are free, so these caps bound what
one identity can take; the global caps (the cache pool, the frame read budget, fair turns in the
scheduler) bound what many can.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from routing.errors import ErrorCode, ProtocolError


@dataclass(frozen=True)
class PeerLimits:
    streams: int
    sessions: int
    cache_pages: int


class PeerBook:
    """What each client peer holds on this node right now."""

    def __init__(self, limits: PeerLimits) -> None:
        self.limits = limits
        self.streams: Counter[str] = Counter()
        self.sessions: Counter[str] = Counter()
        self.pages: Counter[str] = Counter()

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
        if self.sessions[peer] >= self.limits.sessions:
            raise ProtocolError(ErrorCode.PEER_LIMIT, f"you already have {self.sessions[peer]} sessions on this node "
                                                      f"(limit {self.limits.sessions}); close one or use another node")
        self.sessions[peer] += 1

    def remove_session(self, peer: str) -> None:
        self._drop(self.sessions, peer, 1)

    def check_pages(self, peer: str, more: int) -> None:
        if more > 0 and self.pages[peer] + more > self.limits.cache_pages:
            raise ProtocolError(ErrorCode.PEER_LIMIT, f"your sessions would hold {self.pages[peer] + more} cache pages "
                                                      f"on this node (limit {self.limits.cache_pages}); shorten or "
                                                      "close sessions, or use another node")

    def charge_pages(self, peer: str, delta: int) -> None:
        """Pages taken (positive) or given back (negative) by one of `peer`'s sessions."""
        if delta >= 0:
            self.pages[peer] += delta
        else:
            self._drop(self.pages, peer, -delta)

    @staticmethod
    def _drop(counter: Counter[str], peer: str, n: int) -> None:
        counter[peer] -= n
        if counter[peer] <= 0:
            del counter[peer]
