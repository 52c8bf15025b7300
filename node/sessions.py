"""Live inference sessions on a node: their paged caches, push grant and step budget, counters and digest of
what was served."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from routing import wire
from routing.grants import PushGrant
from shards.blocks import BlockStack
from shards.paged_cache import PagedSequence

from .step_budget import StepBudget

if TYPE_CHECKING:
    from .ring import RingSampler


@dataclass(eq=False)
class NodeSession:
    session_id: str
    client: str
    stack: BlockStack  # the blocks this session runs (possibly a sub-span of the node's)
    rows: list[PagedSequence]  # one paged cache per batch row
    max_length: int
    reply_dtype: torch.dtype  # what replies and pushed outputs travel in: the next node's compute dtype
    attesting: bool
    writer: asyncio.StreamWriter  # the client's stream: replies, copies of pushed outputs, errors
    grant: PushGrant | None = None  # where pushed input may come from and output goes
    next_maddrs: list[str] = field(default_factory=list)
    budget: StepBudget = field(default_factory=StepBudget)  # the client's step tickets spent by pushed steps
    ring: "RingSampler | None" = None  # armed by the client's `ring` frame: this node samples the next token
    opened_ns: int = field(default_factory=time.time_ns)
    last_active: float = field(default_factory=time.monotonic)
    length: int = 0  # positions held
    computed: int = 0  # tokens run through the blocks, rejected speculation included
    rolled_back: int = 0  # tokens computed, then discarded by a step that rewound over them
    steps: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one step at a time, relayed or pushed
    _write: asyncio.Lock = field(default_factory=asyncio.Lock)
    _steps: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    _outputs: "hashlib._Hash" = field(default_factory=hashlib.sha256)

    @property
    def key(self) -> str:
        """Sessions are per client: two clients may pick the same id."""
        return session_key(self.client, self.session_id)

    @property
    def batch(self) -> int:
        return len(self.rows)

    @property
    def tokens(self) -> int:
        """Tokens computed for the client (what its receipt must name)."""
        return self.computed

    @property
    def accepted(self) -> int:
        """Tokens computed and kept: speculative drafts the client rejected are rolled back."""
        return self.computed - self.rolled_back

    @property
    def pages(self) -> int:
        """Cache pages held, over all batch rows."""
        return sum(r.num_pages for r in self.rows)

    @property
    def busy(self) -> bool:
        return self.lock.locked()

    @property
    def next_peer(self) -> str | None:
        """The peer this session pushes its output to, None when it replies only to its client."""
        g = self.grant
        return g.next if g is not None and g.next != self.client else None

    @property
    def prev_peer(self) -> str | None:
        g = self.grant
        return g.prev if g is not None and g.prev != self.client else None

    def rewind_to(self, start: int) -> None:
        """A step starting below the positions held discards them (speculative rollback, a re-sent turn)."""
        if start < self.length:
            self.rolled_back += (self.length - start) * self.batch
            self.length = start

    def record_step(self, start: int, n_tokens: int, input_digest: bytes, output_digest: bytes) -> int:
        """Count a computed step; returns its index (what its attestation names)."""
        self.computed += n_tokens * self.batch
        self.length = start + n_tokens
        self.last_active = time.monotonic()
        self._steps.update(input_digest + output_digest)
        self._outputs.update(output_digest)
        self.steps += 1
        return self.steps - 1

    async def send(self, frame: dict[str, Any]) -> None:
        """Write to the client's stream; relayed replies and pushed copies never interleave."""
        async with self._write:
            await wire.write_frame(self.writer, frame)

    @property
    def steps_digest(self) -> bytes:
        """Running SHA-256 over every step's input and output digests, in order (the ledger's record)."""
        return self._steps.copy().digest()

    @property
    def outputs_digest(self) -> bytes:
        """Running SHA-256 over the output digests: what the client's receipt must name."""
        return self._outputs.copy().digest()


def session_key(client: str, session_id: str) -> str:
    return f"{client}/{session_id}"
