"""Packed batches over paged caches give each row what it would get alone, and pages are accounted."""

from __future__ import annotations

import pytest
import torch

from shards.errors import CacheFullError
from shards.packed import Segment, run_packed
from shards.paged_cache import PagePool, PagedSequence

TOL = 1e-5


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def span(local_model):
    return local_model.stack.narrow(0, 10)


def _pool(stack, pages: int = 64, page_tokens: int = 16) -> PagePool:
    c = stack.config
    return PagePool(len(stack.blocks), c.num_kv_heads, c.head_dim, pages, page_tokens=page_tokens)


@torch.inference_mode()
def test_rows_at_different_positions_match_their_unbatched_runs(span):
    torch.manual_seed(0)
    pool = _pool(span)
    lengths = [23, 7, 40]  # prompts of different lengths, crossing page boundaries
    prompts = [torch.randn(1, n, 576) for n in lengths]
    rows, dense = [PagedSequence(pool) for _ in lengths], [span.new_cache(1, 64) for _ in lengths]
    for row, n in zip(rows, lengths):
        row.resize(n + 3)
    out = run_packed(span, torch.cat([p[0] for p in prompts]), [Segment(n, 0, r) for n, r in zip(lengths, rows)])
    offset = 0
    for p, cache, n in zip(prompts, dense, lengths):
        alone = span(p, cache, 0)[0]
        assert _relative(out[offset:offset + n], alone) <= TOL
        offset += n
    # Decode steps at three different positions, plus a two-token chunk and a stateless pass, in one batch.
    steps = [torch.randn(1, 1, 576), torch.randn(1, 2, 576), torch.randn(1, 1, 576)]
    stateless = torch.randn(1, 5, 576)
    segments = [Segment(s.shape[1], n, r) for s, n, r in zip(steps, lengths, rows)] + [Segment(5)]
    out = run_packed(span, torch.cat([s[0] for s in steps] + [stateless[0]]), segments)
    offset = 0
    for s, cache, n in zip(steps, dense, lengths):
        alone = span(s, cache, n)[0]
        assert _relative(out[offset:offset + s.shape[1]], alone) <= TOL
        offset += s.shape[1]
    assert _relative(out[offset:], span(stateless)[0]) <= TOL
    assert [r.length for r in rows] == [24, 9, 41]


@torch.inference_mode()
def test_a_rewind_overwrites_and_gives_back_pages(span):
    pool = _pool(span, pages=8, page_tokens=16)
    row, cache = PagedSequence(pool), span.new_cache(1, 128)
    x = torch.randn(1, 40, 576)
    row.resize(40)
    run_packed(span, x[0], [Segment(40, 0, row)])
    span(x, cache, 0)
    assert pool.used_pages == 3
    row.resize(17)  # roll back to 17 positions: the third page goes back
    assert pool.used_pages == 2 and row.length == 17
    y = torch.randn(1, 3, 576)
    row.resize(20)
    out = run_packed(span, y[0], [Segment(3, 17, row)])
    assert _relative(out, span(y, cache, 17)[0]) <= TOL
    row.release()
    assert pool.used_pages == 0


def test_pool_refuses_what_it_cannot_hold_and_keeps_others_pages():
    pool = PagePool(1, 1, 4, 3, page_tokens=4)
    a, b = PagedSequence(pool), PagedSequence(pool)
    a.resize(8)
    with pytest.raises(CacheFullError):
        b.resize(9)
    assert b.pages == [] and a.num_pages == 2 and pool.free_pages == 1
