"""Live inference sessions on a node: their caches, limits, counters and digest of what was served."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from shards.blocks import BlockStack
from shards.kv_cache import KVCache

from .memory import Reservation


@dataclass
class NodeSession:
    session_id: str
    client: str
    stack: BlockStack  # the blocks this session runs (possibly a sub-span of the node's)
    cache: KVCache
    reservation: Reservation
    max_length: int
    batch: int
    opened_ns: int = field(default_factory=time.time_ns)
    last_active: float = field(default_factory=time.monotonic)
    tokens: int = 0
    steps: int = 0
    _steps: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    _outputs: "hashlib._Hash" = field(default_factory=hashlib.sha256)

    @property
    def key(self) -> str:
        """Sessions are per client: two clients may pick the same id."""
        return f"{self.client}/{self.session_id}"

    def record_step(self, n_tokens: int, input_digest: bytes, output_digest: bytes) -> None:
        self.tokens += n_tokens
        self.steps += 1
        self.last_active = time.monotonic()
        self._steps.update(input_digest + output_digest)
        self._outputs.update(output_digest)

    @property
    def steps_digest(self) -> bytes:
        """Running SHA-256 over every step's input and output digests, in order (the ledger's record)."""
        return self._steps.copy().digest()

    @property
    def outputs_digest(self) -> bytes:
        """Running SHA-256 over the output digests: what the client's receipt must name."""
        return self._outputs.copy().digest()

    def free(self) -> None:
        self.reservation.release()
        self.cache = None  # type: ignore[assignment]
