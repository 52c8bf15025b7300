"""The client's side of a ring (issue 25): start it, take its steps, check every token it samples.

A ring closes the chain: the node serving the last block applies the head, samples the next token
and sends it to the node serving the first (node/ring.py), so a token costs one trip around the
chain (a node serving every block closes it alone: a token costs its step, no round trip to the
client), with the client off the critical path. The client still gets every hop's result (and
attestation), the last node's final hidden state and the token it sampled; its own generation
loop applies the head to that hidden state and chooses the next token exactly as without a ring
(shards/generation.py). Feeding that token is the check: the ring's step for it is used only when
the ring sampled the same token (the first node's attestation then signs the client's own
embedding of it as its input); else the ring is ended, every node rewinds to the last verified
position with the client's next step, and a new ring starts from there.

A differing token is a conviction when no honest rounding explains it: under greedy decoding its
logit is below the best by more than `GREEDY_MARGIN` (relative to the logits' scale), under
sampling it has probability 0 under the client's distribution (outside top-k/top-p/min-p). The
node is banned for good and the evidence kept (`ClientRing.convictions`): the last node's signed
attestation of the final hidden state, that state, and the token it claimed. Without such proof
the client only rolls back (a GPU's rounding may tip a near tie).

A ring runs on one signed ring ticket over the positions the call still needs, computed once per
node each (node/step_budget.py); the sampler stops at the answer's stop tokens, so a call that
ends at EOS or at its token limit leaves no ring step uncounted.

Speculation in the ring (a call with `speculative=k` on a ring runner): the sampler drafts by prompt
lookup (node/ring.py) and sends its token with the drafts as one ring step; the client's drafter is
`RingDrafts`, the drafts the sampler sent, so the client's own trip (shards/generation.py: its head,
the exact acceptance rule, its seeded generator) is that ring step. The sampler's claim after a step
(drafts kept, token sampled) is checked like a single token: the client's next step shows its own
choice, and the first token where they differ convicts the sampler on the same proof, else rolls
back. A sampler that keeps a draft its head rejects is caught there too.

A stalled ring (a node alive to TCP but silent: swapped out, stopped, wedged) is detected without
waiting for the request timeout: within a one-token step, a node whose result does not come within
`silence_limit` — 10 times the slowest of the session's last 8 steps that needed no failover (a
prompt's step among them, so the first tokens get its margin), at least 5 s, at most the request
timeout — fails over like a node that died. The floor is for loaded machines: on 2 shared cores at
load 4 to 11, honest ring steps took 0.1–0.4 s a token in the WAN lab at 0–100 ms (README).
Silence at the ring's turn (the first node's result of a ring step) is first relayed through the
client to find which node is silent, so there a stall costs up to twice the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol, Sequence

import torch

from shards.drafting import Draft
from shards.generation import Forward
from shards.head import Head
from shards.sampling import Sampler

from . import protocol
from .attestation import Attestation
from .errors import PeerFailure, RoutingError
from .grants import RingTicket, ring_ticket

if TYPE_CHECKING:
    from .client import SwarmClient
    from .planner import Hop
    from .span import SpanSession
    from .view import SwarmView

log = logging.getLogger(__name__)
GREEDY_MARGIN = 1e-3  # relative logit gap beyond any honest rounding of the head in float32/bfloat16
SILENCE_FLOOR = 5.0  # seconds a node may always stay silent within a one-token step
SILENCE_FACTOR = 10.0  # times the slowest recent step
SILENCE_WINDOW = 8  # recent steps that set the limit


def silence_limit(recent: Sequence[float], request_timeout: float) -> float:
    """Seconds a node may stay silent within a one-token step of a ring session, given the durations
    of the session's recent steps (see the module docstring); the request timeout before any step."""
    if not recent:
        return request_timeout
    return min(request_timeout, max(SILENCE_FLOOR, SILENCE_FACTOR * max(recent)))


def closes_ring(hops: Sequence[Hop]) -> bool:
    """Whether a chain can close a ring: its first and last node hold the head (one node serving
    every block closes it alone)."""
    return bool(hops) and hops[0].record.ring and hops[-1].record.ring


@dataclass(frozen=True)
class RingEvidence:
    """A ring node's proven wrong token: its signed attestation binds `hidden` (the final hidden state
    it computed for `position - 1`) to its step, and `claimed` is not what the head chooses there."""

    peer: str
    session: str
    position: int
    attestation: Attestation | None  # None when the client verified no attestations
    hidden: torch.Tensor
    claimed: int
    chosen: int


@dataclass(frozen=True)
class _Claim:
    """What the ring's sampler claims it chose after a step the client took (at `start`, embedding
    `ids`, the last `drafted` of them drafts, `rows` the last hop's output for the token before the
    drafts and for each draft): it kept `kept` drafts, sampled `tokens[0]` after them, and sent the
    ring step `tokens` (that token, then its new drafts) on at position `at`."""

    start: int
    ids: tuple[int, ...]
    drafted: int
    rows: torch.Tensor
    attestation: Attestation | None
    kept: int
    tokens: tuple[int, ...]

    @property
    def first(self) -> int:
        """The position of the step's last token that is no draft: the first one judged."""
        return self.start + len(self.ids) - 1 - self.drafted

    @property
    def at(self) -> int:
        return self.first + 1 + self.kept

    @property
    def drafts(self) -> tuple[int, ...]:
        return self.ids[len(self.ids) - self.drafted:]

    @property
    def emitted(self) -> tuple[int, ...]:
        """The tokens the sampler says the step yields: the drafts it kept, then the one it sampled."""
        return (*self.drafts[:self.kept], self.tokens[0])


class RingRunner(Protocol):
    """What a ring needs of the chain runner it drives (routing/chain.py `RemoteRunner`): its spans and
    counters, its failover, and its two ways to step. Declared here so that this module does not import
    chain.py, which imports it."""

    spans: list[SpanSession]
    session_id: str
    max_length: int
    failovers: int
    relayed_steps: int
    silence: float | None
    client: SwarmClient
    view: SwarmView

    async def ready(self) -> None: ...

    async def ring_step(self, hidden: torch.Tensor, start: int, ring: int) -> torch.Tensor: ...

    async def _forward(self, hidden: torch.Tensor, start: int,
                       sent: Callable[[], Awaitable[None]] | None = None) -> torch.Tensor: ...

    async def _replace(self, i: int, start: int, error: RoutingError, hidden: torch.Tensor,
                       through_end: bool = False) -> tuple[int, torch.Tensor]: ...


class ClientRing:
    """Runs a `RingRunner`'s steps as a ring where it can (see the module docstring)."""

    def __init__(self, runner: RingRunner, head: Head) -> None:
        self.runner, self.head = runner, head
        self.ticket: RingTicket | None = None
        self.last = -1  # the position of the last token the call that armed the ring may choose
        self.claim: _Claim | None = None  # the sampler's choice after the latest step
        self.steps = 0  # steps taken from the ring
        self.restarts = 0  # rings started
        self.convictions: list[RingEvidence] = []
        self.recent: deque[float] = deque(maxlen=SILENCE_WINDOW)  # seconds the latest steps took, without failover

    def drafts(self, context: Sequence[int]) -> list[int]:
        """The drafts the ring's sampler sent on after the last token of `context`, if it sampled that token there."""
        claim = self.claim
        if claim is None or self.ticket is None or claim.at != len(context) - 1 or claim.tokens[0] != context[-1]:
            return []
        return list(claim.tokens[1:])

    async def forward(self, step: Forward) -> torch.Tensor:
        """The blocks' output for `step`: the ring's own step when it sampled the tokens fed, else a
        pushed step that (re)starts a ring."""
        ticket, claim = self.ticket, self.claim
        if ticket is not None and claim is not None and ticket.start <= step.start < ticket.end \
                and _last(step) == self.last:
            if (claim.at, claim.tokens) == (step.start, step.ids):
                out = await self._taken(step, self.runner.ring_step(step.hidden, step.start, ticket.seq))
                self.steps += 1
                return out
            await self._judge(step, claim)
        self.ticket = self.claim = None
        await self.runner.ready()
        arm = (lambda: self._start(step)) if self._can_ring(step) else None
        return await self._taken(step, self.runner._forward(step.hidden, step.start, arm))

    async def _taken(self, step: Forward, computing: Awaitable[torch.Tensor]) -> torch.Tensor:
        """A step's output; what its last hop sampled is noted, and any failover ends the ring. A node
        silent for longer than `silence_limit` within a one-token or drafted step fails over."""
        runner = self.runner
        before = (runner.failovers, runner.relayed_steps)
        n = step.hidden.shape[1]
        runner.silence = silence_limit(self.recent, runner.client.request_timeout) if n == 1 + step.drafted else None
        began = time.perf_counter()
        try:
            out = await computing
        finally:
            runner.silence = None
        last = runner.spans[-1]
        frame = last.last_result
        self.claim = None
        if (runner.failovers, runner.relayed_steps) != before:
            self.ticket = None
            return out
        self.recent.append(time.perf_counter() - began)
        if frame is not None and frame.token is not None and self.ticket is not None and frame.kept <= step.drafted:
            self.claim = _Claim(step.start, step.ids, step.drafted, out[0, n - 1 - step.drafted:].clone(),
                                last.attestations[-1] if last.attestations else None, frame.kept,
                                (frame.token, *frame.drafts))
        return out

    def _can_ring(self, step: Forward) -> bool:
        spans = self.runner.spans
        last = spans[-1].next_hop if spans else None
        return (step.sampler is not None and not step.sampler.params.penalized and step.remaining > 1
                and step.drafted == 0 and closes_ring([s.hop for s in spans])
                and spans[0].prev == spans[-1].peer and last is not None and last.peer_id == spans[0].peer
                and step.start + step.hidden.shape[1] < self.runner.max_length)

    async def _start(self, step: Forward) -> None:
        """Arm the last node with a new ring ticket over the positions this call still needs computed:
        after the step that starts the ring signed its step ticket, so that ticket comes first, and before
        that step is sent, so that a node closing the ring alone reads the ring frame first (on the
        same stream). (Should the pushed step reach the last node of a longer chain first, it samples
        nothing and the next step starts a ring.)"""
        runner, sampler = self.runner, step.sampler
        assert sampler is not None
        begin = step.start + step.hidden.shape[1]
        tokens = min(step.remaining - 1, runner.max_length - begin)
        self.ticket = ring_ticket(runner.client.identity, session=runner.session_id, start=begin, tokens=tokens,
                                  drafts=step.max_draft)
        self.last = _last(step)
        p = sampler.params
        state = None if p.greedy else bytes(sampler.generator.get_state().numpy().tobytes())
        frame = protocol.Ring(runner.session_id, self.ticket.to_wire(), p.temperature, p.top_p, p.top_k, p.min_p,
                              state, sorted(step.stop)[:protocol.MAX_STOP_TOKENS], step.max_draft,
                              list(step.context[-protocol.MAX_RING_CONTEXT:]) if step.max_draft else [])
        try:
            await runner.spans[-1].arm(frame)
        except PeerFailure as e:  # the pushed step finds the node gone, and fails over
            log.info("could not arm a ring on %s (%s)", runner.spans[-1].peer[-8:], e)
            self.ticket = None
            return
        self.restarts += 1

    async def _judge(self, step: Forward, claim: _Claim) -> None:
        """The ring's sampler claimed other tokens after the step it judged than the client chose (the
        client's next step shows its choice): convict on proof, else only roll back."""
        kept = step.start - claim.first - 1  # how many drafts the client kept
        if not 0 <= kept <= claim.drafted:
            return
        mine, theirs = (*claim.drafts[:kept], step.ids[0]), claim.emitted
        if mine == theirs:
            return  # the same tokens; only the drafts after them differ
        j = min(kept, claim.kept)  # the first position where they differ
        row, claimed, chosen = claim.rows[j:j + 1], theirs[j], mine[j]
        sampler = step.sampler
        logits = await asyncio.get_running_loop().run_in_executor(None, self._logits, row)
        if sampler is None or sampler.params.greedy:
            gap = float(logits.max() - logits[claimed])
            proven = gap > GREEDY_MARGIN * max(1.0, float(logits.abs().max()))
        else:
            proven = float(sampler.probs(logits)[claimed]) == 0.0
        position = claim.first + j + 1
        last = self.runner.spans[-1]
        log.warning("the ring's sampler %s chose token %d at position %d, the client %d%s", last.peer[-8:], claimed,
                    position, chosen, ": convicted" if proven else "; rolling back")
        if not proven:
            return
        self.convictions.append(RingEvidence(last.peer, self.runner.session_id, position, claim.attestation, row,
                                             claimed, chosen))
        self.runner.view.bans.ban_forever(last.peer)
        await self._cut()
        await self.runner._replace(len(self.runner.spans) - 1, step.start,
                                   PeerFailure(last.peer, f"sampled token {claimed} at position {position}, "
                                                          f"which its head does not choose"), step.hidden)
    async def _cut(self) -> None:
        """Stop the first node embedding the convicted sampler's tokens now, before the (possibly slow)
        re-planning: else that sampler's ring keeps running its ticket through the chain, each node's
        stale results pile up unread, and the re-route behind them times out."""
        first = self.runner.spans[0]
        try:
            await first.route(None, first.next_hop)
        except RoutingError as e:  # re-routed again after the replacement, or failed over at its next step
            log.info("could not cut the ring at %s (%s)", first.peer[-8:], e)

    def _logits(self, row: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.head.logits(row)[0]


class RingDrafts:
    """The client's drafter in a ring with speculation: the drafts the ring's sampler sent on, which its
    next ring step embeds, so that the client's step is that ring step (shards/generation.py follows a
    runner's drafter at the fixed maximum length; the sampler adapts it)."""

    def __init__(self, ring: ClientRing) -> None:
        self.ring = ring

    def propose(self, context: Sequence[int], k: int, sampler: Sampler) -> Draft:
        return Draft(self.ring.drafts(context)[:k])


def _last(step: Forward) -> int:
    """The position of the last token the call that sent `step` may choose: a step of the same call
    names the same (ring steps included), a later call's another."""
    return step.start + len(step.ids) - 1 - step.drafted + step.remaining
