"""A generation session over a chain of nodes, which survives nodes that fail.

A step goes down the chain either relayed (the client sends each span its input and reads its
output) or pushed (the client sends into the first span; each node pushes its output to the next
and sends the client a copy; the last node's output is the step's result). Either way the client
keeps, for every span boundary, the hidden states that entered that span. When a node fails
(stream broken, timeout, error frame, a push its predecessor could not deliver), the client relays
the rest of that step itself, bans the node for a while, plans a new chain for just its blocks,
replays the kept inputs to rebuild the new nodes' caches, tells the neighbours their new push
partners, and continues — so greedy output with a failure equals output without one.

Nodes are chosen by what the client measured, not by what they claim (routing/planner.py), and a
client keeps trying other nodes as long as some chain covers the model and its deadline allows.

In ring mode (`ring_head`), a chain whose first and last nodes announce `ring` is granted as a
cycle: the last node may send sampled tokens to the first; routing/ring.py runs and checks the ring.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Awaitable, Callable

import torch

from shards.generation import Forward
from shards.head import Head
from shards.served import Link, ServedBy

from . import protocol
from .client import deserves_ban, is_busy, is_node_failure
from .errors import NoRouteError, PeerFailure, PeerSilent, RoutingError
from .evidence import Claim
from .planner import Hop, is_relayed
from .ring import ClientRing, RingDrafts, closes_ring
from .span import SpanSession
from .tasks import background
from .verification import Verifier
from .view import Bans, SwarmView
from .wire import WIRE_DTYPES

log = logging.getLogger(__name__)


ReceiptMaker = Callable[[SpanSession], "bytes | None"]
Arm = Callable[[], Awaitable[None]]
DEFAULT_DEADLINE = 300.0  # seconds one forward may spend failing over before it gives up
COVERAGE_POLL_S = 2.0  # while awaiting coverage, how often to re-plan (each failed plan re-reads the DHT)
# A node reached only through relays whose stream could not be opened in time is tried again this soon,
# not after a growing ban: a relay that stalls with its connections open holds up p2pd's dial through it,
# and p2pd skips that circuit only for its own short dial backoff (seconds, growing with its failures), so
# a retry soon after goes through the node's other relays while retries a ban apart (10, 20, 40 s ...)
# dialled the stalled one again each time until the deadline (CI: tests/wan/test_nat_swarm.py). Each try
# counts as a failure, and from RELAYED_RETRIES failures on the usual backoff applies: an identity that
# accepts connections and never opens a stream holds a client no longer than before.
RELAYED_RETRY_S = 2.0
RELAYED_RETRIES = 4


def coverage_wake(now: float, give_up_at: float, ban_ends: float | None, await_coverage: bool) -> float | None:
    """When to plan again while no chain covers the model: when the first ban ends, or (awaiting
    coverage) at the next poll, all within the deadline; None when there is nothing to wait for."""
    if await_coverage and now < give_up_at:
        return min(ban_ends or give_up_at, now + COVERAGE_POLL_S, give_up_at)
    if ban_ends is None or ban_ends > give_up_at:
        return None
    return ban_ends


def busy_for(refresh_after: float, now: float, give_up_at: float) -> float:
    """How long to avoid a node that refused for a full cache: until the records are read again (they
    tell whether it has room). Before the deadline never past it: an avoidance ending after it made
    `coverage_wake` give up at once, up to `refresh_after` early, while full nodes freed room; cut
    there, the client's last plan comes at the deadline with every node that was only full. From the
    deadline on, for the whole period again: the client still tries each chain it can plan then
    (`_may_retry`), and each refusal takes a node out of that last round."""
    return refresh_after if now >= give_up_at else min(refresh_after, give_up_at - now)


def avoid_unreachable(bans: Bans, hop: Hop, error: RoutingError) -> float:
    """Ban a node its chain's open could not reach, for the seconds returned: with backoff, but only
    `RELAYED_RETRY_S` while a node reached only through relays stayed silent fewer than `RELAYED_RETRIES`
    times, since the relay may be what stalled."""
    if isinstance(error, PeerSilent) and is_relayed(hop.record) and bans.failures(hop.peer_id) < RELAYED_RETRIES:
        return bans.ban(hop.peer_id, RELAYED_RETRY_S)
    return bans.ban(hop.peer_id)


class RemoteRunner:
    """A `BlockRunner` whose blocks live on a chain of nodes (see the module docstring)."""

    def __init__(self, view: SwarmView, max_length: int, hidden_size: int, *, step_tokens: int = 512,
                 make_receipt: ReceiptMaker | None = None, verifier: Verifier | None = None, push: bool = True,
                 deadline: float = DEFAULT_DEADLINE, await_coverage: bool = False, ring_head: Head | None = None
                 ) -> None:
        """`await_coverage`: when no chain covers the model, poll for nodes that (re)join until the
        deadline, instead of giving up unless a ban ends in time (a gateway bounds both by one timeout).
        `ring_head`: the client's head, to run and check a ring (routing/ring.py); None: no ring."""
        self.view, self.client = view, view.client
        self.step_tokens, self.verifier, self.push, self.deadline = step_tokens, verifier, push, deadline
        self.await_coverage = await_coverage
        self.max_length, self.hidden_size = max_length, hidden_size
        self.make_receipt = make_receipt
        self.session_id = secrets.token_hex(8)
        self.spans: list[SpanSession] = []
        self.inputs: dict[int, torch.Tensor] = {}  # block index -> (batch, max_length, hidden) sent into it
        self.length = 0
        self.failovers = 0
        self.relayed_steps = 0  # pushed steps that had to be relayed (a push failed)
        self.closed_spans: list[SpanSession] = []
        self.timing = {"plan": 0.0, "open": 0.0}  # seconds spent planning chains and sending their opens
        self._give_up_at = 0.0
        self.silence: float | None = None  # seconds a node may stay silent within this step (None: the request
        # timeout); a ring session sets it for one-token steps (routing/ring.py)
        self.ring = ClientRing(self, ring_head) if ring_head is not None and push else None
        self._ring_drafts = RingDrafts(self.ring) if self.ring is not None else None

    def forward_step(self, step: Forward) -> torch.Tensor:
        return self.client.run(self._forward_step(step))

    async def aforward_step(self, step: Forward) -> torch.Tensor:
        return await self.client.on_loop(self._forward_step(step))

    async def _forward_step(self, step: Forward) -> torch.Tensor:
        if self.ring is None:
            return await self._forward(step.hidden, step.start)
        return await self.ring.forward(step)

    def drafter(self) -> RingDrafts | None:
        """In ring mode, speculation's drafts are the ring sampler's (routing/ring.py), where a ring can
        close: the open chain's ends hold the head, or (no chain open yet) the swarm has head-holding nodes
        at both ends. Elsewhere None, so the call drafts as without rings (prompt lookup)."""
        if self._ring_drafts is None:
            return None
        if self.spans:
            return self._ring_drafts if self._rings() else None
        n, records = self.view.num_blocks, self.view.records.values()
        ends = any(r.ring and r.start == 0 for r in records) and any(r.ring and r.end >= n for r in records)
        return self._ring_drafts if ends else None

    def forward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        return self.client.run(self._forward(hidden, start))

    async def aforward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        return await self.client.on_loop(self._forward(hidden, start))

    def close(self, length: int | None = None) -> None:
        """End every span's session; `length` is how many positions the caller kept (speculation)."""
        self.client.run(self._close(length))

    async def aclose(self, length: int | None = None) -> None:
        await self.client.on_loop(self._close(length))

    def served(self) -> ServedBy:
        """The chain serving now inside a session, the receipted one once it closed."""
        spans = self.spans or self.closed_spans
        return ServedBy(self.session_id, tuple(Link(s.peer, s.hop.start, s.hop.end, s.tokens) for s in spans),
                        self.failovers, self.relayed_steps, self.ring.steps if self.ring is not None else 0)

    async def _forward(self, hidden: torch.Tensor, start: int, arm: Arm | None = None) -> torch.Tensor:
        """Long prompts go in chunks of `step_tokens`, within every node's per-step limit; `arm` is
        awaited once the last chunk's step ticket is signed, before it is pushed into the chain (a ring
        is armed then: routing/ring.py)."""
        if start > self.length:
            raise RoutingError(f"step starts at {start} but the session holds {self.length} tokens")
        await self.ready()
        outputs = []
        step = self._step_limit()
        for offset in range(0, hidden.shape[1], step):
            chunk = hidden[:, offset:offset + step]
            last = offset + step >= hidden.shape[1]
            outputs.append(await self._through_chain(chunk, start + offset, arm if last else None))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    async def ready(self) -> None:
        """Start a forward's failover deadline, and open a chain if none is open."""
        self._give_up_at = time.monotonic() + self.deadline
        if not self.spans:
            self.spans = await self._open_chain(0, self.view.num_blocks)

    def _step_limit(self) -> int:
        """Tokens per step: our chunk size, within every chained node's announced limit."""
        return min([self.step_tokens] + [s.hop.record.max_step_tokens for s in self.spans])

    async def _through_chain(self, hidden: torch.Tensor, start: int, arm: Arm | None = None) -> torch.Tensor:
        out = await (self._pushed(hidden, start, arm) if self.push and (len(self.spans) > 1 or self._rings()) else
                     self._relayed(0, hidden, start))
        self.length = start + hidden.shape[1]
        return out

    def _may_retry(self, error: RoutingError) -> bool:
        """Whether to fail over: within the deadline; past it only from a node that was full, to another
        chain planned at once (`_waited_for_nodes` waits no more), so the deadline ends waiting, not trying
        the nodes that have room then."""
        return is_node_failure(error) and (time.monotonic() < self._give_up_at or is_busy(error))

    async def _relayed(self, i: int, h: torch.Tensor, start: int) -> torch.Tensor:
        """The step from span i on, the client carrying every hop."""
        while i < len(self.spans):
            span = self.spans[i]
            self._remember(span.hop.start, h, start)
            try:
                out = await span.step(h, start, self.silence)
                if await self._caught(span, out, start + h.shape[1]):
                    i, h = await self._replace(i, start, PeerFailure(span.peer, "convicted by a spot check"), h,
                                               through_end=True)
                    continue
            except RoutingError as e:
                if not self._may_retry(e):
                    raise
                i, h = await self._replace(i, start, e, h)
                continue
            h, i = out, i + 1
        return h

    async def _pushed(self, hidden: torch.Tensor, start: int, arm: Arm | None = None) -> torch.Tensor:
        """The step sent into the first span and pushed along; any break is relayed from there on."""
        for span in self.spans:
            span.drop_notices()  # a late notice of an earlier step must not derail this one
        try:
            await self.spans[0].send_step(hidden, start, push=True, before=arm)
        except RoutingError:
            return await self._relayed(0, hidden, start)
        return await self._pushed_along(hidden, start)

    async def ring_step(self, hidden: torch.Tensor, start: int, ring: int) -> torch.Tensor:
        """A step the ring started itself (routing/ring.py): every span's result, under ring ticket `ring`."""
        out = await self._pushed_along(hidden, start, ring)
        self.length = start + hidden.shape[1]
        return out

    async def _pushed_along(self, hidden: torch.Tensor, start: int, ring: int | None = None) -> torch.Tensor:
        """Every span's result of a step pushed along the chain (a ring step: under ring ticket `ring`)."""
        h = hidden
        for i, span in enumerate(self.spans):
            self._remember(span.hop.start, h, start)
            try:
                out, frame = await self._pushed_result(i, h, start, ring)
            except _PushBroken as e:
                log.info("push to %s failed (%s); relaying this step", span.peer[-8:], e)
                self.relayed_steps += 1
                return await self._relayed(i, h, start)
            except RoutingError as e:
                if not self._may_retry(e):
                    raise
                self.relayed_steps += 1
                return await self._relayed(*await self._replace(i, start, e, h), start)
            if await self._caught(span, out, start + h.shape[1]):
                return await self._relayed(*await self._replace(
                    i, start, PeerFailure(span.peer, "convicted by a spot check"), h, through_end=True), start)
            h = out
            if i + 1 < len(self.spans) and not frame.pushed:
                self.relayed_steps += 1
                return await self._relayed(i + 1, h, start)
        return h

    async def _pushed_result(self, i: int, h: torch.Tensor, start: int, ring: int | None = None
                             ) -> tuple[torch.Tensor, protocol.Result]:
        """Span i's result for a pushed step, unless its predecessor reports the push failed first or its
        stream ends: a pusher that died after its own result left may not have pushed (the push is lost
        with its process), and span i, waiting for it, would be blamed when its silence ran out.

        The first span's result of a ring step also waits on the ring's sampler (its predecessor): when
        the sampler's stream ends or no result comes within the step's silence limit, the client relays
        the step itself, and whichever node is gone or silent shows there (no innocent first node is blamed)."""
        span = self.spans[i]
        sent = h.to(span.send_dtype)
        if i == 0 and ring is None:
            return await span.result(sent, start, self.silence)
        pusher = self.spans[i - 1]  # [-1] for a ring step: the ring's sampler
        result = background(span.result(sent, start, self.silence, ring=ring), "a pushed step's result")
        notice = background(_refused(pusher, start), "a push-failure notice")
        tasks = {result, notice, background(pusher.ended(), "the pusher's stream")}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED,
                               timeout=(self.silence or self.client.request_timeout) if ring is not None and i == 0
                               else None)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
        if result.done() and not result.cancelled():
            return result.result()
        if notice.done() and not notice.cancelled():
            raise _PushBroken(notice.result().message or "its push failed")
        raise _PushBroken(f"{'the ring sampler' if ring is not None and i == 0 else 'its pusher'} "
                          f"{pusher.peer[-8:]} is gone or silent")

    async def _caught(self, span: SpanSession, out: torch.Tensor, end: int) -> bool:
        """Spot-check a sample of steps; True when this span's node was proven wrong (its output unused)."""
        if self.verifier is None or not span.attestations or not self.verifier.sample():
            return False
        prefix = self.inputs[span.hop.start][:, :end]
        evidence = await self.verifier.check(Claim(span.attestations[-1], out), prefix)
        return evidence is not None and evidence.dishonest == span.peer

    def _remember(self, block: int, hidden: torch.Tensor, start: int) -> None:
        """Keep what entered `block` at positions [start, start+n), in float32 (exact for every wire dtype)."""
        buf = self.inputs.get(block)
        if buf is None:
            buf = self.inputs[block] = torch.zeros(hidden.shape[0], self.max_length, hidden.shape[2])
        buf[:, start:start + hidden.shape[1]] = hidden

    async def _open_chain(self, start: int, end: int, final_dtype: torch.dtype = torch.float32,
                          prev: str | None = None, next_hop: Hop | None = None,
                          avoid: frozenset[str] = frozenset()) -> list[SpanSession]:
        """Plan [start, end) and send every hop its open frame at once (their replies come with the
        first results, so opening costs no round trip of its own).

        Each node replies (and pushes) in the next node's compute dtype, the last one in `final_dtype`;
        `prev`/`next_hop` are the push neighbours outside this piece of the chain, `avoid` its other nodes.
        """
        rings = self.ring is not None and (start, end) == (0, self.view.num_blocks)  # the client may ring
        while True:
            began = time.perf_counter()
            try:
                hops = await self.view.plan(start, end, self.max_length, self.push, ring=rings, avoid=avoid)
            except NoRouteError:
                if not await self._waited_for_nodes():
                    raise
                continue
            planned = time.perf_counter()
            self.timing["plan"] += planned - began
            if rings and closes_ring(hops):
                prev, next_hop = hops[-1].peer_id, hops[0]
            dtypes = [WIRE_DTYPES.get(h.record.dtype, torch.float32) for h in hops[1:]] + [final_dtype]
            spans = [SpanSession(self.client, hop, self.view.root, self.session_id, self.max_length, dtype,
                                 identity=self.client.identity, attest=self.verifier is not None,
                                 prev=hops[k - 1].peer_id if k else prev,
                                 next_hop=hops[k + 1] if k + 1 < len(hops) else next_hop)
                         for k, (hop, dtype) in enumerate(zip(hops, dtypes))]
            opened = await asyncio.gather(*(s.open() for s in spans), return_exceptions=True)
            self.timing["open"] += time.perf_counter() - planned
            unreachable = [(span, e) for span, e in zip(spans, opened) if isinstance(e, BaseException)]
            if not unreachable:
                return spans
            for span in spans:
                span.abort()
            for _, e in unreachable:
                if not isinstance(e, RoutingError) or not self._may_retry(e):
                    raise e
            await self.view.refresh(force=True)  # a node that restarted announces new addresses
            for span, e in unreachable:
                if isinstance(e, PeerSilent):
                    await self.client.redial(span.peer)
                record = self.view.records.get(span.peer)
                if record is None or record.maddrs == span.hop.record.maddrs:
                    seconds = avoid_unreachable(self.view.bans, span.hop, e)
                    log.info("could not reach %s (%s); avoiding it for %.0fs, re-planning", span.peer[-8:], e, seconds)

    async def _waited_for_nodes(self) -> bool:
        """No chain now: nodes that were full or busy may take us again when their ban ends, and with
        `await_coverage` new or restarted nodes may join. Wait for the first of these within the deadline
        (True: plan again); False when there is nothing to wait for."""
        now = time.monotonic()
        wake = coverage_wake(now, self._give_up_at, self.view.bans.next_expiry(), self.await_coverage)
        if wake is None:
            return False
        log.info("no chain covers the model now; planning again in %.1fs", wake - now)
        await asyncio.sleep(wake - now + 0.05)
        return True

    async def _replace(self, i: int, start: int, error: RoutingError, hidden: torch.Tensor,
                       through_end: bool = False) -> tuple[int, torch.Tensor]:
        """Swap the failed span i for a fresh chain over its blocks, replaying positions [0, start); returns
        the span and its input (`hidden`, the step's at span i) from which the step goes on.

        The fresh piece keeps off the chain's other nodes: a node holds one session per client session, so
        a second span on it would replace the first. Where only they serve its blocks (a whole-model node
        left mid-span for a faster one that failed), the whole chain is planned anew (`_reopen`); where
        nothing serves it now (its one node banned), the piece waits for nodes as before.
        `through_end` also replays every later span: after a dishonest node, their caches may hold
        states computed from its outputs, and a step may rewrite positions it already holds.
        """
        failed = self.spans[i]
        failed.abort()
        self.failovers += 1
        a, b = failed.hop.start, failed.hop.end
        await self._note_failure(failed.peer, a, b, error)
        others = frozenset(s.peer for s in self.spans if s is not failed)
        if others and not await self.view.covers(a, b, self.max_length, others) \
                and await self.view.covers(a, b, self.max_length):
            return await self._reopen(i, start, hidden)
        prev, nxt = self._neighbour(i - 1), self._neighbour(i + 1)
        prev = prev.peer if prev is not None else None
        nxt = nxt.hop if nxt is not None else None
        new = await self._replayed(a, b, start, failed.reply_dtype, prev, nxt, others,
                                   self.spans[i + 1:] if through_end else [])
        self.spans[i:i + 1] = new
        if self.push:
            await self._reroute(i, len(new))
        return i, hidden

    async def _reopen(self, i: int, start: int, hidden: torch.Tensor) -> tuple[int, torch.Tensor]:
        """Close the chain's spans but the failed span i (their receipts signed for what they kept), open a
        new whole chain and replay positions [0, start) into it; the step goes on from its first span."""
        self.spans[i].abort()
        kept = self.spans[:i] + self.spans[i + 1:]
        self.spans = []
        await self._retire(kept, start)
        self.spans = await self._replayed(0, self.view.num_blocks, start)
        return 0, self.inputs[0][:, start:start + hidden.shape[1]]

    async def _replayed(self, a: int, b: int, start: int, final_dtype: torch.dtype = torch.float32,
                        prev: str | None = None, next_hop: Hop | None = None, avoid: frozenset[str] = frozenset(),
                        later: list[SpanSession] | None = None) -> list[SpanSession]:
        """A fresh chain over [a, b) (`_open_chain`) with positions [0, start) replayed into it and on into the
        `later` spans; a node failing the replay is noted and the piece planned again."""
        while True:
            new = await self._open_chain(a, b, final_dtype, prev, next_hop, avoid)
            try:
                await self._replay(new + (later or []), a, start)
            except RoutingError as e:
                for span in new:
                    span.abort()
                if not self._may_retry(e):
                    raise
                await self._note_failure(getattr(e, "peer", ""), a, b, e)
                continue
            return new

    async def _reroute(self, i: int, count: int) -> None:
        """Tell the spans around new spans [i, i+count) their new push partners."""
        around = {self._neighbour(j) for j in (i - 1, i + count)} - {None} - set(self.spans[i:i + count])
        for span in around:
            assert span is not None
            j = self.spans.index(span)
            prev, nxt = self._neighbour(j - 1), self._neighbour(j + 1)
            try:
                await span.route(prev.peer if prev else None, nxt.hop if nxt else None)
            except RoutingError as e:  # its next pushed step fails over like any other
                log.info("could not re-route %s (%s)", span.peer[-8:], e)

    def _neighbour(self, j: int) -> SpanSession | None:
        """Span j, wrapping around the ends when the chain closes a ring; None: the client."""
        n = len(self.spans)
        if 0 <= j < n:
            return self.spans[j]
        if n > 1 and self._rings():  # a node ringing alone has no neighbour: a failover re-plans the ring
            return self.spans[j % n]
        return None

    def _rings(self) -> bool:
        """Whether the open chain closes a ring (its last node sends each token to its first)."""
        return self.ring is not None and closes_ring([s.hop for s in self.spans])

    async def _note_failure(self, peer: str, a: int, b: int, error: RoutingError) -> None:
        if isinstance(error, PeerSilent):
            await self.client.redial(peer)
        bans = self.view.bans
        duration = (bans.busy(peer, busy_for(self.view.refresh_after, time.monotonic(), self._give_up_at))
                    if is_busy(error)
                    else bans.penalize(peer, deserves_ban(error)))
        if duration is not None:
            log.warning("node %s failed on blocks %d:%d (%s); banned for %.0fs, re-routing", peer[-8:], a, b, error,
                        duration)
        else:
            log.info("node %s closed our session on blocks %d:%d (%s); re-opening", peer[-8:], a, b, error)

    async def _replay(self, spans: list[SpanSession], block: int, length: int) -> None:
        """Rebuild fresh spans' caches from what entered `block` at positions [0, length), chunk by chunk."""
        step = min([self.step_tokens] + [s.hop.record.max_step_tokens for s in spans])
        for offset in range(0, length, step):
            h = self.inputs[block][:, offset:min(length, offset + step)]
            for span in spans:
                self._remember(span.hop.start, h, offset)
                h = await span.step(h, offset)

    async def _close(self, length: int | None) -> None:
        spans, self.spans = self.spans, []
        await self._retire(spans, length)
        self.closed_spans += spans

    async def _retire(self, spans: list[SpanSession], length: int | None) -> None:
        """Close `spans`, each with its receipt for the positions kept."""
        for span in spans:
            span.keep(length)
            receipt = self.make_receipt(span) if self.make_receipt else None
            await span.close(receipt)


async def _refused(pusher: SpanSession, start: int) -> protocol.PushFailed:
    """The pusher's next notice that its push of the step at `start` was refused; one about an earlier
    step (its successor refused a late push the client had relayed already) is passed over."""
    while True:
        notice = await pusher.notices.get()
        if notice.start in (None, start):
            return notice


class _PushBroken(Exception):
    """A predecessor could not push this step on; the client relays it from here."""
