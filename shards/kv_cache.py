"""A per-session key/value cache, preallocated for a fixed maximum length (no growing lists).

Slots are explicit: a step writes `n` tokens at slots `[start, start + n)`, which are also the
tokens' positions. Rows of a batch share slots, so they hold sequences of one length.
"""

from __future__ import annotations

import torch

from .errors import CacheLengthError


class KVCache:
    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, head_dim: int, max_length: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        if max_length < 1 or batch < 1:
            raise CacheLengthError(f"invalid cache size: batch={batch}, max_length={max_length}")
        shape = (num_layers, batch, num_kv_heads, max_length, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_length = max_length
        self.batch = batch
        self.length = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def check_step(self, start: int, n: int) -> None:
        """A step may rewrite the tail (rewind) but never leave a gap or run past the fixed length."""
        if n < 1:
            raise CacheLengthError("a step must carry at least one token")
        if start < 0 or start > self.length:
            raise CacheLengthError(
                f"step starts at position {start} but the session holds {self.length} tokens; "
                "steps must continue the sequence (start <= tokens held)")
        if start + n > self.max_length:
            raise CacheLengthError(
                f"session max length {self.max_length} exceeded: positions {start}..{start + n - 1}; "
                "open the session with a larger max_length")

    def positions(self, start: int, n: int) -> torch.Tensor:
        """Token positions (batch, n) of slots [start, start + n)."""
        return torch.arange(start, start + n, device=self.keys.device).expand(self.batch, n)
