"""What a client knows of the swarm for one model: records, measured round trips, bans.

The failover runner (routing/chain.py) plans its chains through this view; the view decides which
nodes may be planned through: it re-reads the DHT in the background, pings new nodes, bans failing
ones with backoff, and reviews evidence others published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from . import dht as dht_io
from . import untrusted
from .client import SwarmClient, gather_pings
from .errors import NoRouteError
from .evidence import Evidence, Judgement, check_evidence
from .planner import Hop, plan_measured_first, usable
from .records import ServerRecord
from .tasks import background
from .verification import Referee
from .weights import AcceptedWeights
from .wire import PROTOCOL_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Coverage:
    blocks_total: int
    uncovered: tuple[int, ...]  # blocks no usable node serves (online, right protocol, not banned, long enough)
    nodes_known: int  # announcing the model
    nodes_reached: int  # of those, answering our pings and not banned


@dataclass
class Bans:
    """Failing peers are avoided for `base * 2**(failures-1)` seconds, capped; `clock` is monotonic
    seconds (passed in by tests, so they never sleep)."""

    base: float = 5.0
    cap: float = 300.0
    _until: dict[str, float] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)
    _excused: dict[str, float] = field(default_factory=dict)
    excuse_window: float = 60.0
    clock: Callable[[], float] = time.monotonic

    def ban(self, peer: str, seconds: float | None = None) -> float:
        """Count a failure and avoid `peer` for `seconds`, by default the backoff its failures so far earn."""
        n = self._failures[peer] = self._failures.get(peer, 0) + 1
        duration = min(self.cap, self.base * 2 ** (n - 1)) if seconds is None else seconds
        self._until[peer] = max(self._until.get(peer, 0.0), self.clock() + duration)  # never shorten a ban
        return duration

    def busy(self, peer: str, seconds: float) -> float:
        """After a node refused for a full cache: avoid it for `seconds` (until the client re-reads the
        records, which tell whether it has room again), counting no failure. Backoff kept a long session
        off every node that was ever full when it asked, past its deadline once the bans reached `cap`;
        a shorter wait had every client of a full swarm retry every full node every few seconds."""
        self._until[peer] = max(self._until.get(peer, 0.0), self.clock() + seconds)
        return seconds

    def excuse(self, peer: str) -> bool:
        """Whether to let a polite refusal (an expired session, a node draining) pass unbanned: once
        per `excuse_window`, so a node that answers every open that way is avoided like any failure."""
        now = self.clock()
        if now - self._excused.get(peer, -self.excuse_window) < self.excuse_window:
            return False
        self._excused[peer] = now
        return True

    def penalize(self, peer: str, deserved: bool) -> float | None:
        """After a failure: a ban when it was `deserved`, or for a polite refusal beyond the peer's one
        excuse per window; the ban's length, or None when excused."""
        if deserved or not self.excuse(peer):
            return self.ban(peer)
        return None

    def ban_forever(self, peer: str) -> None:
        """For a node proven to compute wrong results: no backoff ends this."""
        self._until[peer] = float("inf")

    def __contains__(self, peer: object) -> bool:
        return isinstance(peer, str) and self._until.get(peer, 0.0) > self.clock()

    def active(self) -> frozenset[str]:
        """The peers banned now: one snapshot for a plan, which tests a thousand records against it."""
        now = self.clock()
        return frozenset(p for p, t in self._until.items() if t > now)

    def failures(self, peer: str) -> int:
        """How often `peer` was banned so far, whether or not its ban has ended since."""
        return self._failures.get(peer, 0)

    def next_expiry(self) -> float | None:
        """When the earliest ban still running ends (monotonic time), None if none will."""
        now = self.clock()
        ending = [t for t in self._until.values() if now < t < float("inf")]
        return min(ending, default=None)


class SwarmView:
    """What a client knows of the swarm for one model: records, measured round trips, bans.

    Records are re-read every `refresh_after` seconds in the background, so a step never waits
    for the DHT. Every new node is pinged: one that does not answer (a dead address, or a record
    made up by an attacker) is banned with backoff like any failing node, and the planner prefers
    nodes it has measured.
    """

    MAX_EVIDENCE_PER_REFRESH = 4  # each published document costs a recomputation; attackers publish many

    def __init__(self, client: SwarmClient, root: str, num_blocks: int, refresh_after: float = 30.0,
                 referee: Referee | None = None, weights: AcceptedWeights | None = None) -> None:
        self.client, self.root, self.num_blocks = client, root, num_blocks
        self.refresh_after, self.referee, self.weights = refresh_after, referee, weights
        self.records: dict[str, ServerRecord] = {}
        self.rtt: dict[str, float] = {}
        self.bans = Bans()
        self.judged: dict[str, Judgement | None] = {}  # published evidence seen, by hex document digest
        self.distrusted: set[str] = set()  # publishers of evidence that did not hold up
        self._fetched = 0.0
        self._background: asyncio.Task | None = None

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._fetched >= self.refresh_after

    async def refresh(self, force: bool = False) -> None:
        if not force and not self.stale and self.records:
            return
        try:
            records = await self.client.records(self.root, self.num_blocks)
        except dht_io.DHTTimeout:  # a loaded DHT (or machine) answers slowly: once more, patiently
            log.info("the swarm's records did not come within %.0f s; reading them again", dht_io.DHT_TIMEOUT)
            records = await self.client.records(self.root, self.num_blocks, dht_io.PATIENCE * dht_io.DHT_TIMEOUT)
        if self.weights is not None:  # nodes of other weights: only those the client derives itself
            await self.weights.admit(records.values())
            records = {p: r for p, r in records.items() if self.weights.accepts(r)}
        self.records = records
        self.client.learn(self.records.values())
        self._fetched = time.monotonic()
        await self._review_evidence()
        new = [p for p, r in self.records.items() if p not in self.rtt and r.is_serving and p not in self.bans]
        for peer, result in (await gather_pings(self.client, new)).items():
            if isinstance(result, BaseException):
                log.info("node %s did not answer a ping (%s); avoiding it", peer[-8:], result)
                self.bans.ban(peer)
            elif result[1].root != self.root or result[1].v != PROTOCOL_VERSION:
                log.warning("node %s announces our model but serves root %s / protocol %s; avoiding it",
                            peer[-8:], result[1].root[:70], result[1].v)
                self.bans.ban(peer)
            else:
                self.rtt[peer] = result[0]

    def coverage(self, max_length: int = 1) -> Coverage:
        """How much of the model the swarm covers as this view sees it (no query; call on the client loop)."""
        servers = usable(list(self.records.values()), self.bans.active(), max_length)
        uncovered = tuple(b for b in range(self.num_blocks) if not any(r.start <= b < r.end for r in servers))
        reached = sum(1 for p in self.records if p in self.rtt and p not in self.bans)
        return Coverage(self.num_blocks, uncovered, len(self.records), reached)

    def refresh_soon(self) -> None:
        """Re-read the swarm in the background when the view is stale; never raises."""
        if self.stale and (self._background is None or self._background.done()):
            self._background = background(self._quiet_refresh(), "a background swarm refresh")

    async def _quiet_refresh(self) -> None:
        try:
            await self.refresh(force=True)
        except Exception as e:  # the DHT is best-effort; the next plan tries again
            log.info("background refresh of the swarm failed: %s", e)

    async def _review_evidence(self) -> None:
        """Check a few documents others published: valid evidence bans its node for good, invalid
        evidence gets its publisher ignored. No document, however malformed, reaches the caller."""
        if self.referee is None:
            return
        try:
            published = await dht_io.fetch_evidence(
                self.client.dht, self.root, limit=self.MAX_EVIDENCE_PER_REFRESH,
                skip=lambda publisher, digest: publisher in self.distrusted or digest in self.judged)
        except Exception as e:  # the DHT is best-effort
            log.debug("could not read published evidence: %s", e)
            return
        loop = asyncio.get_running_loop()
        for publisher, (digest, document) in published.items():
            try:  # decoding and recomputing a document of up to 64 MiB: off the loop
                judgement = await loop.run_in_executor(None, self._judge, document)
            except Exception as e:  # whatever a document does to decoding or torch, it is the publisher's fault
                untrusted.dropped("evidence", f"from {publisher}: {type(e).__name__}: {e}")
                judgement = Judgement(False, None, str(e), {})
            self.judged[digest] = judgement
            if judgement is None:
                continue  # about weights this client neither holds nor routes through: not its to judge
            if judgement.valid and judgement.dishonest:
                log.warning("published evidence from %s holds: avoiding %s for good", publisher[-8:],
                            judgement.dishonest)
                self.bans.ban_forever(judgement.dishonest)
            else:
                log.warning("ignoring invalid evidence published by %s (%s)", publisher, judgement.reason[:200])
                self.distrusted.add(publisher)

    def _judge(self, document: bytes) -> Judgement | None:
        """A published document's verdict, or None when it is about weights this client does not hold."""
        evidence = Evidence.from_bytes(document)
        store = self.referee.store_of(evidence.root.hex())
        return None if store is None else check_evidence(evidence, store)

    async def plan(self, start: int, end: int, max_length: int = 1, push: bool = False, ring: bool = False,
                   avoid: frozenset[str] = frozenset()) -> list[Hop]:
        """The best chain over nodes this client measured; unmeasured ones only when nothing else covers.
        `ring`: the client rings (a ring node alone is priced without the client's legs); `avoid`: nodes
        not to plan through besides the banned (the rest of the chain around a piece being replaced)."""
        if not self.records:
            await self.refresh(force=True)
        self.refresh_soon()
        try:
            return await self._plan(start, end, max_length, push, ring, avoid)
        except NoRouteError:
            await self.refresh(force=True)
        return await self._plan(start, end, max_length, push, ring, avoid)

    async def covers(self, start: int, end: int, max_length: int, avoid: frozenset[str] = frozenset()) -> bool:
        """Whether a chain over [start, end) exists without the `avoid` nodes (nor the banned), as the records
        read now stand."""
        try:
            await self._plan(start, end, max_length, False, False, avoid)
        except NoRouteError:
            return False
        return True

    async def _plan(self, start: int, end: int, max_length: int, push: bool, ring: bool,
                    avoid: frozenset[str] = frozenset()) -> list[Hop]:
        """`plan_measured_first` over a snapshot of the records, round trips and bans, in a worker thread: a
        pushed plan over a thousand records is ~30 ms of CPU, which the event loop's streams must not wait for."""
        return await asyncio.to_thread(plan_measured_first, list(self.records.values()), start, end,
                                       rtt=dict(self.rtt), banned=self.bans.active() | avoid, max_length=max_length,
                                       push=push, ring=ring)
