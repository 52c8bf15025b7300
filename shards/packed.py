"""One forward for many sessions: their tokens packed into one sequence, attention kept per session.

The projections and MLPs — the weights, which dominate a decode step's memory traffic — run once
over every row's tokens together; only attention is per row, each against its own paged cache.
A row's queries therefore see exactly its own past: no padding, no cross-row mask, rows at any
position and of any length. This is what lets a node batch steps of unrelated sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .blocks import Attend, BlockStack, attention, attention_mask
from .paged_cache import PagedSequence


@dataclass(frozen=True)
class Segment:
    """`length` tokens of one row at positions [start, start + length), cached in `row`.

    A segment without a row is a stateless pass over just its own tokens from position 0.
    """

    length: int
    start: int = 0
    row: PagedSequence | None = None


def _packed_attend(segments: Sequence[Segment], layer_offset: int, device: torch.device) -> Attend:
    plans = []
    offset = 0
    for s in segments:
        if s.row is not None and s.start > 0 and s.length > 1:
            mask = attention_mask(s.start, s.length, None, device)
        else:
            mask = None
        plans.append((offset, s, mask))
        offset += s.length

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outputs = []
        for at, s, mask in plans:
            qs, ks, vs = q[:, :, at:at + s.length], k[:, :, at:at + s.length], v[:, :, at:at + s.length]
            causal = s.length > 1 and mask is None
            if s.row is not None:
                s.row.write(layer_offset + layer, s.start, ks[0], vs[0])
                if s.start > 0:
                    ks, vs = s.row.read(layer_offset + layer, s.start + s.length)
            outputs.append(attention(qs, ks, vs, mask, causal))
        return torch.cat(outputs, dim=2)

    return attend


def run_packed(stack: BlockStack, hidden: torch.Tensor, segments: Sequence[Segment], layer_offset: int = 0
               ) -> torch.Tensor:
    """The span's output for `hidden` (total tokens, hidden_size), the segments' tokens back to back.

    `layer_offset` maps this stack's blocks to the rows' pool layers (a sub-span of a node's span).
    Rows' page tables must already hold their segment's positions; their lengths advance here.
    """
    if sum(s.length for s in segments) != hidden.shape[0]:
        raise ValueError("segments must cover the packed tokens exactly")
    positions = torch.cat([torch.arange(s.start, s.start + s.length, device=hidden.device) for s in segments])
    out = stack.run(hidden[None], positions[None], _packed_attend(segments, layer_offset, hidden.device))
    for s in segments:
        if s.row is not None:
            s.row.length = s.start + s.length
    return out[0]
