"""Who gets the node's KV-cache pages: max-min fair shares that free identities cannot beat.

Identities are free, so a per-peer cap (`--peer-cache-tokens`) alone lets two of them, each within
it, hold the whole pool with sessions that step just often enough never to be idle. Here a peer's
share is the pool divided by the number of peers that want pages now (those holding some, and the
one asking). A step that needs more pages than are free is admitted by, in order:
  1. ending sessions idle for more than `evict_idle_after` seconds, least recently used first
     (their client is told `session_expired`);
  2. if the asking peer stays within its share once grown, ending sessions of the largest holder
     above its share (its least recently used first, again and again re-picking the largest) —
     their client is told `cache_reclaimed` and replays elsewhere.
Otherwise the asking session alone gets `cache_full`; sessions step 2 would end are left alone.

Bound: with n peers wanting pages, each gets min(what it asks, pool / n): k identities together
hold at most pool − h × pool / (k + h) against h others that want their share, i.e. k / (k + h)
of the pool — one honest client always gets pool / (k + 1) with k attackers.

The daemon carries out the decisions (node/serving.py); this object only counts and decides, so
it is tested in process with a clock passed in.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar

from routing.errors import ErrorCode, ProtocolError


class Holding(Protocol):
    """A session as admission sees it."""

    client: str
    last_active: float

    @property
    def busy(self) -> bool: ...

    @property
    def pages(self) -> int: ...


S = TypeVar("S", bound=Holding)


@dataclass(frozen=True)
class Eviction(Generic[S]):
    session: S
    code: ErrorCode
    reason: str


@dataclass(frozen=True)
class Decision(Generic[S]):
    """Sessions to end (carried out whether admitted or not), and whether the step may then grow."""

    evict: list[Eviction[S]]
    admitted: bool


class Admission:
    """Counts the pages each client peer holds and decides who gets more."""

    def __init__(self, pool_pages: int, peer_pages: int, evict_idle_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool_pages, self.peer_pages, self.evict_idle_after = pool_pages, peer_pages, evict_idle_after
        self.clock = clock
        self.held: Counter[str] = Counter()

    def share(self, peer: str, held: Counter[str] | None = None) -> int:
        """The pool divided among the peers holding pages and `peer` (who asks)."""
        held = self.held if held is None else held
        wanting = {p for p, n in held.items() if n > 0} | {peer}
        return self.pool_pages // len(wanting)

    def admit(self, peer: str, more: int, free: int, sessions: Iterable[S], exclude: S | None = None) -> Decision[S]:
        """May `peer` take `more` pages when `free` are? `exclude` is the session asking (never ended)."""
        if more <= 0:
            return Decision([], True)
        if self.held[peer] + more > self.peer_pages:
            raise ProtocolError(ErrorCode.PEER_LIMIT, f"your sessions would hold {self.held[peer] + more} cache "
                                                      f"pages on this node (limit {self.peer_pages}); shorten or "
                                                      "close sessions, or use another node")
        short = more - free
        if short <= 0:
            return Decision([], True)
        now = self.clock()
        held = Counter(self.held)
        candidates = [s for s in sessions if s is not exclude and not s.busy and s.pages > 0]
        idle = sorted((s for s in candidates if now - s.last_active > self.evict_idle_after),
                      key=lambda s: s.last_active)
        evict: list[Eviction[S]] = []
        for s in idle:
            if short <= 0:
                break
            evict.append(Eviction(s, ErrorCode.SESSION_EXPIRED,
                                  f"your session was idle for {now - s.last_active:.0f}s and its cache was given to "
                                  "active sessions; reopen it (the client replays)"))
            short -= s.pages
            held[s.client] -= s.pages
        if short <= 0:
            return Decision(evict, True)
        ended = {id(e.session) for e in evict}
        reclaimed = self._reclaim(peer, more, short, held, [s for s in candidates if id(s) not in ended])
        return Decision(evict + (reclaimed or []), reclaimed is not None)

    def _reclaim(self, peer: str, more: int, short: int, held: Counter[str], candidates: list[S]
                 ) -> list[Eviction[S]] | None:
        """Sessions of holders above their share that free `short` pages for `peer`, or None if none can."""
        share = self.share(peer, held)
        if held[peer] + more > share:
            return None
        evict: list[Eviction[S]] = []
        while short > 0:
            above = [s for s in candidates if s.client != peer and held[s.client] > share]
            if not above:
                return None
            largest = max(held[s.client] for s in above)
            victim = min((s for s in above if held[s.client] == largest), key=lambda s: s.last_active)
            evict.append(Eviction(victim, ErrorCode.CACHE_RECLAIMED,
                                  f"your sessions held {held[victim.client]} cache pages on this node, above the fair "
                                  f"share of {share} ({self.pool_pages} pages among the peers that want them), and "
                                  "another peer needed pages; continue on another node (the client replays)"))
            candidates.remove(victim)
            short -= victim.pages
            held[victim.client] -= victim.pages
        return evict

    def charge(self, peer: str, delta: int) -> None:
        """Pages taken (positive) or given back (negative) by one of `peer`'s sessions or forwards."""
        self.held[peer] += delta
        if self.held[peer] <= 0:
            del self.held[peer]
