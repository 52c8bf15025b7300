"""Ring mode on a node (issue 25): the node serving the last block samples each next token and sends
it straight to the node serving the first, which embeds it and pushes the step on; the client is off
the critical path and only checks (routing/ring.py).

A node started with `--ring` loads the head shard (embeddings, final norm, LM head; the store keeps
them as one shard) whatever span it serves, so a move keeps it able to close a ring, counts it in
its memory budget, and announces `ring` in its record. A session's client arms the sampler with a
`ring` frame: its signed ring ticket bounds the positions the ring may run (node/step_budget.py
checks each ring step against it on every node), and its sampler is greedy or the client's seeded
one (temperature, top-k/p, min-p, no penalties), whose generator state comes along so that both
draw the same token. Trust is unchanged: a node that samples or embeds a different token is caught
by the client, which re-applies the head to the final hidden state it gets a copy of.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import torch

from routing import protocol, wire
from routing.errors import ErrorCode, ProtocolError
from routing.grants import RingTicket, accept_ring_ticket
from shards.errors import ShardsError
from shards.head import Head
from shards.sampling import Sampler, SamplingParams


def head_bytes(vocab_size: int, hidden_size: int, dtype: torch.dtype) -> int:
    """What `--ring` adds to a node's memory: embeddings and an LM head (tied models keep a transposed copy)."""
    return 2 * vocab_size * hidden_size * torch.empty((), dtype=dtype).element_size()


@dataclass
class RingSampler:
    """One session's armed sampler: which positions it may sample, and how."""

    ticket: RingTicket
    sampler: Sampler | None  # None: greedy
    stop: frozenset[int] = frozenset()  # tokens that end the answer: the ring stops after one
    sampled: int = -1  # the last position sampled

    def due(self, position: int, running: RingTicket | None) -> bool:
        """Whether to sample the token for `position`, where the step just computed ends: once, within
        the ticket, after the step that starts the ring (one ending at its first position, signed before
        it) or one of its own steps (`running`, the ring ticket the session's budget spent last)."""
        t = self.ticket
        own = running.seq == t.seq if running is not None else position == t.start
        return own and t.start <= position < t.end and position > self.sampled

    def ends(self, token: int) -> bool:
        """Whether `token` ends the answer: then it is not computed, and nothing after it sampled."""
        if token in self.stop:
            self.sampled = self.ticket.end
            return True
        return False


@dataclass
class RingHead:
    """The head on a ring node: it embeds tokens for the first block, samples after the last."""

    head: Head
    device: torch.device
    dtype: torch.dtype
    vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.vocab_size = self.head.embed_tokens.num_embeddings

    def arm(self, frame: protocol.Ring, client: str, session: str) -> RingSampler:
        """The sampler a `ring` frame asks for, checked."""
        ticket = accept_ring_ticket(frame.ticket, client=client, session=session)
        if frame.temperature == 0:
            return RingSampler(ticket, None, frozenset(frame.stop))
        if frame.state is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, "a sampled ring needs its client's generator 'state'")
        try:
            sampler = Sampler(SamplingParams(temperature=frame.temperature, top_p=frame.top_p,
                                             top_k=frame.top_k, min_p=frame.min_p))
            sampler.generator.set_state(torch.frombuffer(bytearray(frame.state), dtype=torch.uint8))
        except (ValueError, RuntimeError, ShardsError) as e:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"the ring's sampler cannot be built: {e}"[:300]) from None
        return RingSampler(ticket, sampler, frozenset(frame.stop))

    def embed(self, token: int) -> torch.Tensor:
        """The first block's input for `token`, as a pushed step's (1, 1, hidden) float32 CPU tensor."""
        if not 0 <= token < self.vocab_size:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"token {token} is not below the vocabulary's {self.vocab_size}")
        with torch.inference_mode():
            return self.head.embed(torch.tensor([[token]], device=self.device)).float().cpu()

    async def sample(self, ring: RingSampler, hidden: dict, position: int, hidden_size: int) -> int:
        """The token for `position` from the step's encoded output (its last row is the final hidden state)."""
        out = wire.decode_tensor(hidden, hidden_size=hidden_size, max_tokens=1 << 20, max_batch=1)
        ring.sampled = position
        return await asyncio.get_running_loop().run_in_executor(None, self._choose, out[0, -1:], ring.sampler)

    def _choose(self, row: torch.Tensor, sampler: Sampler | None) -> int:
        with torch.inference_mode():
            logits = self.head.logits(row.to(self.device))[0]
        return int(logits.argmax()) if sampler is None else sampler(logits)
