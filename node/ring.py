"""Ring mode on a node (issue 25): the node serving the last block samples each next token and sends
it straight to the node serving the first, which embeds it and pushes the step on; the client is off
the critical path and only checks (routing/ring.py). A node serving every block closes a ring alone,
its tokens sent to itself (node/push.py), so a token costs its step and no trip to the client.

A node started with `--ring` loads the head shard (embeddings, final norm, LM head; the store keeps
them as one shard) whatever span it serves, so a move keeps it able to close a ring, counts it in
its memory budget, and announces `ring` in its record. A session's client arms the sampler with a
`ring` frame: its signed ring ticket bounds the positions the ring may run (node/step_budget.py
checks each ring step against it on every node), and its sampler is greedy or the client's seeded
one (temperature, top-k/p, min-p, no penalties), whose generator state comes along so that both
draw the same token. Trust is unchanged: a node that samples or embeds a different token is caught
by the client, which re-applies the head to the final hidden state it gets a copy of.

Speculation in the ring (`max_draft` in the `ring` frame): the sampler drafts by prompt lookup over
the text so far (the frame brings its latest tokens; the sampler adds what it samples) and sends its
sampled token with the drafts as one ring step; when that step comes back it keeps the drafts the
exact acceptance rule keeps (argmax equality, or the seeded speculative-sampling rule, with the
client's generator) and samples the token after them. The client applies the same rule with its own
head to the same rows, so it draws the same random numbers and either agrees or rolls back.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import torch

from routing import protocol, wire
from routing.errors import ErrorCode, ProtocolError
from routing.grants import RingTicket, accept_ring_ticket
from shards.drafting import PromptLookupDrafter
from shards.errors import ShardsError
from shards.head import Head
from shards.sampling import Sampler, SamplingParams
from shards.speculative import (AcceptanceEstimate, AdaptiveDraftLength, FixedDraftLength, accept_greedy,
                                accept_sampled)


def head_bytes(vocab_size: int, hidden_size: int, dtype: torch.dtype) -> int:
    """What `--ring` adds to a node's memory: embeddings and an LM head (tied models keep a transposed copy)."""
    return 2 * vocab_size * hidden_size * torch.empty((), dtype=dtype).element_size()


MIN_MATCH, MAX_MATCH = 2, 3  # prompt lookup's n-gram lengths; longer matches count as 3
MAX_MEMORIES = 1024  # clients whose drafting a sampler remembers (the latest to ring)


class DraftMemory:
    """What a client's rings have taught this sampler about drafting: the ring step's time by its
    positions (F in shards/speculative.py's draft-length model) and how often drafts are kept, apart
    for each n-gram match length behind them (2 tokens, or 3 and more: on free chat a short match is
    mostly chance, on repetitive text a long one mostly holds). Kept across the client's rings and
    sessions (RingHead keeps the latest clients'), so that an answer does not start by paying again
    for drafts the conversation keeps rejecting."""

    def __init__(self, max_draft: int, sampled: bool) -> None:
        self.length = (FixedDraftLength if sampled else AdaptiveDraftLength)(max_draft)
        self.by_match = {n: AcceptanceEstimate() for n in range(MIN_MATCH, MAX_MATCH + 1)}


class RingDrafting:
    """How a ring's sampler drafts (speculation in the ring): prompt lookup over the text so far, only
    on a match of `MIN_MATCH` tokens or more (a one-token match is no evidence: on free chat it mostly
    drafts tokens that are rejected, and each costs the whole ring compute), as many as the draft-length
    model expects to pay off from the client's measured ring steps and from how often drafts behind a
    match this long were kept (`memory`). A sampled ring drafts at the fixed maximum, so that a seed
    repeats its answer."""

    def __init__(self, memory: DraftMemory) -> None:
        self.memory = memory
        self.lookup = PromptLookupDrafter(min_ngram=MIN_MATCH, max_ngram=MAX_MATCH)
        self.sent_at = 0.0  # when the last step went out
        self.match = 0  # the match length behind the drafts sent last (0: none drafted)

    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        """Drafts to follow `context`, at most `limit` (the ticket's room). Only a match is an
        occasion to draft: one declined still decays its match length's evidence (so drafting is
        retried after a while), one without a match does not (free chat's few matches would
        otherwise each start from the optimistic prior again)."""
        self.sent_at = time.perf_counter()
        self.match, found = self.lookup.match(context, limit) if limit > 0 else (0, [])
        if not found:
            return []
        accept = self.memory.by_match[self.match]
        k = self.memory.length.choose(limit, accept)
        if k == 0:
            accept.record(0, 0)
        return found[:k]

    def returned(self, positions: int, drafted: int, kept: int) -> None:
        """The step sent last came back around the ring with `positions` positions, `kept` of its
        `drafted` drafts accepted."""
        self.memory.length.record_forward(positions, time.perf_counter() - self.sent_at)
        if drafted:
            self.memory.by_match[self.match].record(drafted, kept)


@dataclass
class RingSampler:
    """One session's armed sampler: which positions it may sample, how, and what it drafts from."""

    ticket: RingTicket
    sampler: Sampler | None  # None: greedy
    stop: frozenset[int] = frozenset()  # tokens that end the answer: the ring stops after one
    context: list[int] = field(default_factory=list)  # the text so far (its latest tokens), through `sampled`
    drafting: RingDrafting | None = None  # None: no speculation
    sampled: int = -1  # the position of the last token sampled
    sent: tuple[int, ...] = ()  # the last ring step sent: the token sampled, then its drafts

    def due(self, start: int, positions: int, running: RingTicket | None, pushed: bool) -> bool:
        """Whether to judge the step of `positions` at `start` just computed and sample after it: the
        step that starts the ring (a pushed one ending at its first position, signed before it), or the
        ring step this sampler sent last (`running`: the ring ticket the session's budget spent last).
        Only a pushed step (by a predecessor, or by the client into a node that closes a ring alone): a
        step the client relays is its failover relaying a step the ring lost, and sampling after it would
        keep the old ring running beside the client's next steps (their pushes then rewound nodes the
        client had moved on: a stalled node's replacement was left a position short)."""
        t = self.ticket
        if not pushed:
            return False
        if running is None:
            return start + positions == t.start and self.sampled < t.start
        return running.seq == t.seq and (start, positions) == (self.sampled, len(self.sent)) and start < t.end


@dataclass(frozen=True)
class Sampled:
    """What the sampler chose after a step: `kept` of its drafts, then `token` (at position `at`), and
    the `drafts` sent on after it; `onward`: whether a ring step carries them (not after a stop token,
    nor past the ticket)."""

    kept: int
    token: int
    at: int
    drafts: list[int]
    onward: bool


@dataclass
class RingHead:
    """The head on a ring node: it embeds tokens for the first block, samples after the last."""

    head: Head
    device: torch.device
    dtype: torch.dtype
    vocab_size: int = field(init=False)
    memories: "OrderedDict[str, DraftMemory]" = field(init=False, default_factory=OrderedDict)  # by client

    def __post_init__(self) -> None:
        self.vocab_size = self.head.embed_tokens.num_embeddings

    def arm(self, frame: protocol.Ring, client: str, session: str) -> RingSampler:
        """The sampler a `ring` frame asks for, checked."""
        ticket = accept_ring_ticket(frame.ticket, client=client, session=session)
        sampled = frame.temperature > 0
        drafting = RingDrafting(self.memory(client, frame.max_draft, sampled)) if frame.max_draft else None
        stop, context = frozenset(frame.stop), list(frame.context)
        if frame.temperature == 0:
            return RingSampler(ticket, None, stop, context, drafting)
        if frame.state is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, "a sampled ring needs its client's generator 'state'")
        try:
            sampler = Sampler(SamplingParams(temperature=frame.temperature, top_p=frame.top_p,
                                             top_k=frame.top_k, min_p=frame.min_p))
            sampler.generator.set_state(torch.frombuffer(bytearray(frame.state), dtype=torch.uint8))
        except (ValueError, RuntimeError, ShardsError) as e:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"the ring's sampler cannot be built: {e}"[:300]) from None
        return RingSampler(ticket, sampler, stop, context, drafting)

    def memory(self, client: str, max_draft: int, sampled: bool) -> DraftMemory:
        """What `client`'s earlier rings learned about drafting (a sampled ring drafts the fixed
        maximum: it needs none), or a fresh memory for it."""
        if sampled:
            return DraftMemory(max_draft, sampled=True)
        memory = self.memories.pop(client, None)
        if memory is None or memory.length.max_draft != max_draft:
            memory = DraftMemory(max_draft, sampled=False)
        self.memories[client] = memory
        while len(self.memories) > MAX_MEMORIES:
            self.memories.popitem(last=False)
        return memory

    def embed(self, tokens: Sequence[int]) -> torch.Tensor:
        """The first block's input for `tokens`, as a pushed step's (1, n, hidden) float32 CPU tensor."""
        if not all(0 <= t < self.vocab_size for t in tokens):
            raise ProtocolError(ErrorCode.BAD_FRAME, f"a ring token is not below the vocabulary's {self.vocab_size}")
        with torch.inference_mode():
            return self.head.embed(torch.tensor([list(tokens)], device=self.device)).float().cpu()

    async def sample(self, ring: RingSampler, hidden: dict, start: int, hidden_size: int) -> Sampled:
        """Judge the drafts of the step at `start` (its encoded output's rows) by the exact acceptance
        rule, sample the token after the ones kept, and draft the next step's."""
        out = wire.decode_tensor(hidden, hidden_size=hidden_size, max_tokens=1 << 20, max_batch=1)
        return await asyncio.get_running_loop().run_in_executor(None, self._sample, ring, out[0], start)

    def _sample(self, ring: RingSampler, rows: torch.Tensor, start: int) -> Sampled:
        own = ring.sampled == start and len(ring.sent) == rows.shape[0]  # else the step that starts the ring
        drafts = list(ring.sent[1:]) if own else []
        tokens = self._choose(rows[-1 - len(drafts):], drafts, ring.sampler)
        kept, t = len(tokens) - 1, ring.ticket
        if own and ring.drafting is not None:
            ring.drafting.returned(rows.shape[0], len(drafts), kept)
        at = start + rows.shape[0] - len(drafts) + kept
        ring.context.extend(tokens)
        ring.sampled, ring.sent = at, ()
        if at >= t.end or any(token in ring.stop for token in tokens):  # the answer ends: nothing after it
            ring.sampled = t.end
            return Sampled(kept, tokens[-1], at, [], False)
        following = ring.drafting.propose(ring.context, t.end - at - 1) if ring.drafting is not None else []
        ring.sent = (tokens[-1], *following)
        return Sampled(kept, tokens[-1], at, following, True)

    def _choose(self, rows: torch.Tensor, drafts: list[int], sampler: Sampler | None) -> list[int]:
        """The drafts kept, then the next token: the client's own rule (shards/speculative.py) on
        the final hidden states `rows`, one per draft and one after them."""
        with torch.inference_mode():
            logits = self.head.logits(rows.to(self.device)).float().cpu()
        if sampler is None:
            return accept_greedy(logits.argmax(-1).tolist(), drafts)
        return accept_sampled(sampler.probs(logits), drafts, None, sampler.generator)
