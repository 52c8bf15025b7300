"""One forward for many sessions: their tokens packed into one sequence, attention kept per session.

The projections and MLPs — the weights, which dominate a decode step's memory traffic — run once
over every row's tokens together; only attention is per row, each against its own paged cache.
A row's queries therefore see exactly its own past: no padding across rows' tokens, rows at any
position and of any length. This is what lets a node batch steps of unrelated sessions.

Single-token decode rows, the common case under load, share one attention call: their pages are
gathered into one padded batch with a mask that stops each row at its own position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .blocks import Attend, BlockStack, attention, attention_mask
from .paged_cache import PagedSequence, index_tensor


@dataclass(frozen=True)
class Segment:
    """`length` tokens of one row at positions [start, start + length), cached in `row`.

    A segment without a row is a stateless pass over just its own tokens from position 0.
    """

    length: int
    start: int = 0
    row: PagedSequence | None = None


class _DecodeGroup:
    """The one-token rows of a batch: where their tokens sit, which pages they write and read."""

    def __init__(self, offsets: list[int], rows: list[PagedSequence], positions: list[int],
                 device: torch.device) -> None:
        page = rows[0].pool.page_tokens
        n = len(rows)
        widest = max(r.pool.pages_for(p + 1) for r, p in zip(rows, positions))
        table = []
        for r, p in zip(rows, positions):
            used = r.pages[:r.pool.pages_for(p + 1)]
            table += used + [0] * (widest - len(used))  # padding reads page 0: masked
        # Built from the rows' host-side page lists and moved in one copy: no device work per row.
        host = index_tensor(offsets + positions + [r.pages[p // page] for r, p in zip(rows, positions)] + table,
                            device)
        self.index, pos, self.pages, self.table = host.split([n, n, n, n * widest])
        self.slots = pos % page
        self.width = widest * page
        valid = torch.arange(self.width, device=device)[None, :] <= pos[:, None]
        self.mask = valid[:, None, None, :]  # (n, 1, 1, width): each row's keys up to its own position
        self.padding = ~valid[:, None, :, None]  # (n, 1, width, 1): slots past a row's end, zeroed
        self.pool = rows[0].pool

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (heads, n, dim), k/v (kv_heads, n, dim) of the group's tokens → (heads, n, dim)."""
        keys, values = self.pool.keys[layer], self.pool.values[layer]
        keys[:, self.pages, self.slots] = k
        values[:, self.pages, self.slots] = v
        heads, dim, n = keys.shape[0], keys.shape[-1], len(self.slots)
        ks = keys.index_select(1, self.table).view(heads, n, self.width, dim).transpose(0, 1)
        vs = values.index_select(1, self.table).view(heads, n, self.width, dim).transpose(0, 1)
        # Stale slots may hold anything, NaN included: masking alone would still add NaN into the scores
        # and multiply 0 by NaN in the values, so they are zeroed first.
        ks.masked_fill_(self.padding, 0.0)  # in place: index_select made fresh copies
        vs.masked_fill_(self.padding, 0.0)
        out = attention(q.transpose(0, 1)[:, :, None], ks, vs, self.mask, False)  # (n, heads, 1, dim)
        return out[:, :, 0].transpose(0, 1)


def _packed_attend(segments: Sequence[Segment], layer_offset: int, device: torch.device) -> Attend:
    singles: list[tuple[int, PagedSequence, int]] = []
    plans = []
    offset = 0
    for s in segments:
        if s.row is not None and s.length == 1:
            singles.append((offset, s.row, s.start))
        else:
            mask = attention_mask(s.start, s.length, device) if s.row is not None and s.start > 0 else None
            plans.append((offset, s, mask))
        offset += s.length
    group = _DecodeGroup(*map(list, zip(*singles)), device) if len(singles) > 1 else None
    if group is None:
        plans += [(at, Segment(1, start, row), None) for at, row, start in singles]

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(q)
        pool_layer = layer_offset + layer
        for at, s, mask in plans:
            qs, ks, vs = q[:, :, at:at + s.length], k[:, :, at:at + s.length], v[:, :, at:at + s.length]
            if s.row is not None:
                s.row.write(pool_layer, s.start, ks[0], vs[0])
                if s.start > 0:
                    ks, vs = s.row.read(pool_layer, s.start + s.length)
            out[:, :, at:at + s.length] = attention(qs, ks, vs, mask, s.length > 1 and mask is None)
        if group is not None:
            i = group.index
            out[0][:, i] = group.attend(pool_layer, q[0][:, i], k[0][:, i], v[0][:, i])
        return out

    return attend


def run_packed(stack: BlockStack, hidden: torch.Tensor, segments: Sequence[Segment], layer_offset: int = 0
               ) -> torch.Tensor:
    """The span's output for `hidden` (total tokens, hidden_size), the segments' tokens back to back.

    `layer_offset` maps this stack's blocks to the rows' pool layers (a sub-span of a node's span).
    Rows' page tables must already hold their segment's positions; their lengths advance here.
    """
    if sum(s.length for s in segments) != hidden.shape[0]:
        raise ValueError("segments must cover the packed tokens exactly")
    positions = index_tensor([p for s in segments for p in range(s.start, s.start + s.length)], hidden.device)
    out = stack.run(hidden[None], positions[None], _packed_attend(segments, layer_offset, hidden.device))
    for s in segments:
        if s.row is not None:
            s.row.length = s.start + s.length
    return out[0]
