"""The step scheduler's policy on a tiny in-memory span: chunked prefill, turns shared between peers,
per-peer queue limits, abandoned requests dropped, and one bad request failing alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import torch

from node.scheduler import StepScheduler, Work
from routing.errors import ErrorCode, ProtocolError
from shards.paged_cache import PagePool, PagedSequence
from tests.shards.random_model import RandomModel

STACK = RandomModel().stack
HIDDEN = STACK.config.hidden_size


def hidden(tokens: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, tokens, HIDDEN, generator=torch.Generator().manual_seed(seed))


def stateless(peer: str, h: torch.Tensor) -> Work:
    return Work(peer, STACK, h, 0, None, lambda out: out)


def cached(peer: str, h: torch.Tensor, pool: PagePool) -> Work:
    """A prefill of `h` into a fresh row of `pool`, with its pages taken as the node does before submitting."""
    row = PagedSequence(pool)
    row.resize(h.shape[1])
    return Work(peer, STACK, h, 0, [row], lambda out: out)


def run(test: Callable[[StepScheduler, list], Awaitable[None]], **limits: int) -> list[tuple[int, int]]:
    """Run `test` against a started scheduler; the (requests, tokens) of every batch it computed."""
    batches: list[tuple[int, int]] = []
    settings = dict(max_batch_tokens=64, prefill_chunk=16, peer_queue_tokens=1024) | limits

    async def main() -> None:
        scheduler = StepScheduler(STACK, on_batch=lambda n, tokens, waits: batches.append((n, tokens)), **settings)
        scheduler.start()
        try:
            await test(scheduler, batches)
        finally:
            await scheduler.stop()

    asyncio.run(main())
    return batches


def pool() -> PagePool:
    c = STACK.config
    return PagePool(len(STACK.blocks), c.num_kv_heads, c.head_dim, 16, page_tokens=16)


def test_a_stateless_forward_computes_the_span() -> None:
    h = hidden(5)

    async def test(scheduler: StepScheduler, batches: list) -> None:
        out = await scheduler.submit(stateless("a", h))
        torch.testing.assert_close(out, STACK(h), rtol=1e-5, atol=1e-5)

    assert run(test) == [(1, 5)]


def test_a_long_prefill_runs_in_chunks_and_equals_one_pass() -> None:
    h = hidden(40)

    async def test(scheduler: StepScheduler, batches: list) -> None:
        out = await scheduler.submit(cached("a", h, pool()))
        torch.testing.assert_close(out, STACK(h), rtol=1e-4, atol=1e-4)

    assert run(test) == [(1, 16), (1, 16), (1, 8)]


def test_a_peer_with_short_steps_is_not_kept_waiting_behind_a_long_prefill() -> None:
    """A's 48-token prefill goes 16 tokens per iteration; B's three one-token forwards share those iterations."""
    order: list[str] = []

    async def test(scheduler: StepScheduler, batches: list) -> None:
        async def submit(name: str, work: Work) -> None:
            await scheduler.submit(work)
            order.append(name)

        await asyncio.gather(submit("a", cached("a", hidden(48), pool())),
                             *(submit(f"b{i}", stateless("b", hidden(1, i))) for i in range(3)))

    assert run(test, max_batch_tokens=18) == [(3, 18), (2, 17), (1, 16)]
    assert order == ["b0", "b1", "b2", "a"]


def test_a_peer_may_queue_only_so_much_work() -> None:
    async def test(scheduler: StepScheduler, batches: list) -> None:
        await scheduler.stop()  # nothing is computed: what is submitted stays queued
        first = asyncio.ensure_future(scheduler.submit(stateless("a", hidden(3))))
        await asyncio.sleep(0)
        with pytest.raises(ProtocolError) as refused:
            await scheduler.submit(stateless("a", hidden(3)))
        assert refused.value.code == ErrorCode.BUSY
        other = asyncio.ensure_future(scheduler.submit(stateless("b", hidden(3))))
        await asyncio.sleep(0)
        assert scheduler.queued_tokens("a") == scheduler.queued_tokens("b") == 3
        for waiting in (first, other):
            waiting.cancel()
        await asyncio.gather(first, other, return_exceptions=True)

    run(test, peer_queue_tokens=4)


def test_a_stateless_forward_larger_than_a_batch_is_refused() -> None:
    async def test(scheduler: StepScheduler, batches: list) -> None:
        with pytest.raises(ProtocolError) as refused:
            await scheduler.submit(stateless("a", hidden(65)))
        assert refused.value.code == ErrorCode.TOO_LARGE

    assert run(test) == []


def test_a_request_whose_client_left_is_never_computed() -> None:
    async def test(scheduler: StepScheduler, batches: list) -> None:
        gone = asyncio.ensure_future(scheduler.submit(stateless("a", hidden(4))))
        gone.cancel()  # before the scheduler's loop took it
        await asyncio.gather(gone, return_exceptions=True)
        await scheduler.submit(stateless("b", hidden(2)))

    assert run(test) == [(1, 2)]


def test_non_finite_input_fails_its_request_alone() -> None:
    async def test(scheduler: StepScheduler, batches: list) -> None:
        bad = hidden(2)
        bad[0, 1, 0] = float("nan")
        results = await asyncio.gather(scheduler.submit(stateless("a", bad)),
                                       scheduler.submit(stateless("b", hidden(2))), return_exceptions=True)
        assert isinstance(results[0], ProtocolError) and results[0].code == ErrorCode.BAD_TENSOR
        torch.testing.assert_close(results[1], STACK(hidden(2)), rtol=1e-5, atol=1e-5)

    run(test)
