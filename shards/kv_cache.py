"""A per-session key/value cache, preallocated for a fixed maximum length (no growing lists).

Slots are explicit: a step writes `n` tokens at slots `[start, start + n)`. Rows of a batch share
slots; a row shorter than the others is left-padded, and `pad_lengths[row]` says how many of its
first slots are padding (masked as keys, and excluded from its positions).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import CacheLengthError


class KVCache:
    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, head_dim: int, max_length: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu",
                 pad_lengths: Sequence[int] | None = None) -> None:
        if max_length < 1 or batch < 1:
            raise CacheLengthError(f"invalid cache size: batch={batch}, max_length={max_length}")
        shape = (num_layers, batch, num_kv_heads, max_length, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_length = max_length
        self.batch = batch
        self.length = 0
        self.pad_lengths: torch.Tensor | None = None
        if pad_lengths is not None and any(pad_lengths):
            if len(pad_lengths) != batch or min(pad_lengths) < 0:
                raise CacheLengthError(f"pad_lengths must be {batch} non-negative counts, got {list(pad_lengths)}")
            self.pad_lengths = torch.tensor(list(pad_lengths), dtype=torch.long, device=device)

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
        """Token positions (batch, n) of slots [start, start + n): slot minus the row's padding."""
        slots = torch.arange(start, start + n, device=self.keys.device).expand(self.batch, n)
        if self.pad_lengths is None:
            return slots
        return (slots - self.pad_lengths[:, None]).clamp_min(0)
