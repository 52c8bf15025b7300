"""The client's side of a ring (issue 25): start it, take its steps, check every token it samples.

A ring closes the chain: the node serving the last block applies the head, samples the next token
and sends it to the node serving the first (node/ring.py), so a token costs one trip around the
chain, with the client off the critical path. The client still gets every hop's result (and
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
from typing import TYPE_CHECKING, Awaitable, Sequence

import torch

from shards.generation import Forward
from shards.head import Head

from . import protocol
from .attestation import Attestation
from .errors import PeerFailure, RoutingError
from .grants import RingTicket, ring_ticket

if TYPE_CHECKING:
    from .chain import RemoteRunner
    from .planner import Hop

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
    """Whether a chain can close a ring: two nodes or more, the first and last holding the head."""
    return len(hops) > 1 and hops[0].record.ring and hops[-1].record.ring


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


class ClientRing:
    """Runs a `RemoteRunner`'s steps as a ring where it can (see the module docstring)."""

    def __init__(self, runner: RemoteRunner, head: Head) -> None:
        self.runner, self.head = runner, head
        self.ticket: RingTicket | None = None
        self.sampled: dict[int, int] = {}  # position -> the token the ring's sampler chose for it
        self.final: dict[int, tuple[torch.Tensor, Attestation | None]] = {}  # position -> the last hop's output
        # row before it, and its attestation
        self.steps = 0  # steps taken from the ring
        self.restarts = 0  # rings started
        self.convictions: list[RingEvidence] = []
        self.recent: deque[float] = deque(maxlen=SILENCE_WINDOW)  # seconds the latest steps took, without failover

    async def forward(self, step: Forward) -> torch.Tensor:
        """The blocks' output for `step`: the ring's own step when it sampled the token fed, else a
        pushed step that (re)starts a ring."""
        ticket, n = self.ticket, step.hidden.shape[1]
        if ticket is not None and n == 1 and ticket.start <= step.start < ticket.end:
            claimed = self.sampled.get(step.start)
            if claimed == step.ids[0]:
                out = await self._taken(step, self.runner.ring_step(step.hidden, step.start, ticket.seq))
                self.steps += 1
                return out
            if claimed is not None:
                await self._judge(step, claimed)
        self.ticket = None
        await self.runner.ready()
        arm = (lambda: self._start(step)) if self._can_ring(step) else None
        return await self._taken(step, self.runner._forward(step.hidden, step.start, arm))

    async def _taken(self, step: Forward, computing: Awaitable[torch.Tensor]) -> torch.Tensor:
        """A step's output; what its last hop sampled is noted, and any failover ends the ring. A node
        silent for longer than `silence_limit` within a one-token step fails over."""
        runner = self.runner
        before = (runner.failovers, runner.relayed_steps)
        n = step.hidden.shape[1]
        runner.silence = silence_limit(self.recent, runner.client.request_timeout) if n == 1 else None
        began = time.perf_counter()
        try:
            out = await computing
        finally:
            runner.silence = None
        end = step.start + n
        last = runner.spans[-1]
        frame = last.last_result
        if (runner.failovers, runner.relayed_steps) != before:
            self.ticket = None
            return out
        self.recent.append(time.perf_counter() - began)
        if frame is not None and frame.token is not None and self.ticket is not None:
            self.sampled[end] = frame.token
            self.final[end] = (out[0, -1:].clone(), last.attestations[-1] if last.attestations else None)
            self.final.pop(step.start, None)  # judged by now
        return out

    def _can_ring(self, step: Forward) -> bool:
        spans = self.runner.spans
        last = spans[-1].next_hop if spans else None
        return (step.sampler is not None and not step.sampler.params.penalized and step.remaining > 1
                and len(spans) > 1 and closes_ring([s.hop for s in spans])
                and spans[0].prev == spans[-1].peer and last is not None and last.peer_id == spans[0].peer
                and step.start + step.hidden.shape[1] < self.runner.max_length)

    async def _start(self, step: Forward) -> None:
        """Arm the last node with a new ring ticket over the positions this call still needs computed;
        once the step that starts the ring is sent, so that its step ticket comes first. (Should the
        pushed step reach the last node first, it samples nothing and the next step starts a ring.)"""
        runner, sampler = self.runner, step.sampler
        assert sampler is not None
        begin = step.start + step.hidden.shape[1]
        tokens = min(step.remaining - 1, runner.max_length - begin)
        self.ticket = ring_ticket(runner.client.identity, session=runner.session_id, start=begin, tokens=tokens)
        self.sampled.clear()
        self.final.clear()
        p = sampler.params
        state = None if p.greedy else bytes(sampler.generator.get_state().numpy().tobytes())
        frame = protocol.Ring(runner.session_id, self.ticket.to_wire(), p.temperature, p.top_p, p.top_k, p.min_p,
                              state, sorted(step.stop)[:protocol.MAX_STOP_TOKENS])
        try:
            await runner.spans[-1].arm(frame)
        except PeerFailure as e:  # the pushed step finds the node gone, and fails over
            log.info("could not arm a ring on %s (%s)", runner.spans[-1].peer[-8:], e)
            self.ticket = None
            return
        self.restarts += 1

    async def _judge(self, step: Forward, claimed: int) -> None:
        """The ring sampled `claimed` where the client chose `step.ids[0]`: convict on proof, else only roll back."""
        final = self.final.get(step.start)
        if final is None:
            return
        row, attestation = final
        sampler = step.sampler
        logits = await asyncio.get_running_loop().run_in_executor(None, self._logits, row)
        if sampler is None or sampler.params.greedy:
            gap = float(logits.max() - logits[claimed])
            proven = gap > GREEDY_MARGIN * max(1.0, float(logits.abs().max()))
        else:
            proven = float(sampler.probs(logits)[claimed]) == 0.0
        last = self.runner.spans[-1]
        log.warning("the ring's sampler %s chose token %d at position %d, the client %d%s", last.peer[-8:], claimed,
                    step.start, step.ids[0], ": convicted" if proven else "; rolling back")
        if not proven:
            return
        self.convictions.append(RingEvidence(last.peer, self.runner.session_id, step.start, attestation, row,
                                             claimed, step.ids[0]))
        self.runner.view.bans.ban_forever(last.peer)
        await self._cut()
        await self.runner._replace(len(self.runner.spans) - 1, step.start,
                                   PeerFailure(last.peer, f"sampled token {claimed} at position {step.start}, "
                                                          f"which its head does not choose"))

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
