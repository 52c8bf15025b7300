"""Continuous batching: every session's pending compute in one forward of the span per iteration.

Requests (session steps, prefill chunks, stateless and spot-check forwards) are queued per client
peer. Each iteration takes, in passes over the peers in rotating order, one chunk of each peer's
oldest request not yet taken, until `max_batch_tokens` is reached, and runs them as one packed forward
(shards/packed.py) on the compute thread. No request waits for a batch to fill: an idle node runs
a lone step at once, and whatever arrives while a batch computes joins the next iteration. A long
prompt is cut into `prefill_chunk`-token chunks, so it delays other sessions' steps by at most one
chunk per iteration; a peer with many requests gets no more turns than a peer with one. A request
whose client has gone is dropped before it is computed.

What bounds a peer here, free identities included (the reasoning of node/admission.py for the
cache): turns are max-min fair — every peer with work gets one chunk before any gets a second, and
each iteration starts one peer later, so with n peers queued a request's first chunk runs within n
iterations of at most `max_batch_tokens`, whatever the others queue. What one identity may queue is
capped (`peer_queue_tokens`, then `busy`); k identities queue at most k times that, which costs
memory (bounded also by their session and stream caps), not others' turns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from routing import wire
from routing.errors import ErrorCode, ProtocolError
from shards.blocks import BlockStack
from shards.packed import Segment, run_packed
from shards.paged_cache import PagedSequence

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Work:
    """One request's compute: `received` (batch, n, hidden) through `stack` at positions start.. .

    `rows` are the batch rows' caches (None for a stateless forward, which then runs in one piece
    from position 0). `finish` turns the full output into the reply, on the compute thread.
    """

    peer: str
    stack: BlockStack
    received: torch.Tensor
    start: int
    rows: list[PagedSequence] | None
    finish: Callable[[torch.Tensor], Any]
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    enqueued: float = field(default_factory=time.perf_counter)
    done: int = 0  # tokens per row computed so far
    started: float | None = None
    _input: torch.Tensor | None = None
    _parts: list[torch.Tensor] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return self.received.shape[0]

    @property
    def tokens(self) -> int:
        return self.received.shape[1]

    @property
    def remaining(self) -> int:
        return self.batch * (self.tokens - self.done)

    @property
    def span(self) -> tuple[int, int]:
        return self.stack.start, self.stack.end


@dataclass(frozen=True)
class Chunk:
    work: Work
    offset: int  # first token (per row) of this chunk
    length: int


class StepScheduler:
    def __init__(self, base: BlockStack, *, max_batch_tokens: int, prefill_chunk: int, peer_queue_tokens: int,
                 batching: bool = True, on_batch: Callable[[int, int, list[float]], None] | None = None) -> None:
        self.base = base
        self.max_batch_tokens, self.prefill_chunk = max_batch_tokens, prefill_chunk
        self.max_requests = None if batching else 1  # off: one request per forward (for comparison)
        self.peer_queue_tokens = peer_queue_tokens
        self.on_batch = on_batch  # (requests, tokens, queue waits) per iteration, for metrics
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="compute")
        self._queues: dict[str, deque[Work]] = {}
        self._turn: deque[str] = deque()  # peers in the order they get their next turn
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._computing: list[Work] = []  # requests of the batch on the compute thread now
        self._computed: asyncio.Future | None = None  # resolved when that batch is done
        self.iterations = 0
        self.largest_batch = 0  # most requests computed in one iteration so far

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="step-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for queue in self._queues.values():
            for work in queue:
                work.future.cancel()
        self._queues.clear()
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)  # waits for its last batch

    def queued_tokens(self, peer: str) -> int:
        return sum(w.remaining for w in self._queues.get(peer, ()))

    async def submit(self, work: Work) -> Any:
        """Queue `work` and wait for its result; cancelling the wait drops work not yet computed."""
        if work.rows is None and work.remaining > self.max_batch_tokens:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"a stateless forward of {work.remaining} tokens exceeds this "
                                                     f"node's {self.max_batch_tokens}-token batch")
        queued = self.queued_tokens(work.peer)
        if queued and queued + work.remaining > self.peer_queue_tokens:
            raise ProtocolError(ErrorCode.BUSY, f"you have {queued} tokens of work queued on this node; at most "
                                                f"{self.peer_queue_tokens} may wait — retry when they are done")
        queue = self._queues.setdefault(work.peer, deque())
        if not queue:
            self._turn.append(work.peer)
        queue.append(work)
        self._wake.set()
        try:
            return await asyncio.shield(work.future)
        except asyncio.CancelledError:
            work.future.cancel()  # the scheduler skips it from now on, but a chunk of it on the compute
            # thread still uses its cache pages, which the caller frees once this returns: wait for that chunk
            while work in self._computing and self._computed is not None:
                await asyncio.shield(self._computed)
            raise

    def _drop_abandoned(self) -> None:
        """Requests whose client has gone (their wait was cancelled) are never computed."""
        for peer in list(self._turn):
            queue = self._queues[peer]
            for work in [w for w in queue if w.future.done()]:
                queue.remove(work)
            if not queue:
                self._turn.remove(peer)
                del self._queues[peer]

    def _select(self) -> list[Chunk]:
        """Chunks of the oldest requests, in passes over the peers (each peer's first request, then each
        one's second, ...) until the token budget is spent: a peer with many requests gets no more of a
        batch than one with few while both have work, and a lone peer's requests still share a forward."""
        self._drop_abandoned()
        budget, chunks, taken, span = self.max_batch_tokens, [], set(), None
        peers = list(self._turn)
        self._turn.rotate(-1)  # the next iteration starts with the next peer
        added = True
        while added and budget > 0 and len(chunks) != self.max_requests:
            added = False
            for peer in peers:
                work = next((w for w in self._queues[peer] if id(w) not in taken and w.span == (span or w.span)),
                            None)
                if work is None:
                    continue
                per_row = work.tokens - work.done
                limit = per_row if work.rows is None else min(per_row, self.prefill_chunk)
                length = min(limit, budget // work.batch)
                if length < limit and (work.rows is None or length < 1):
                    continue  # does not fit this iteration; it goes first in a later one
                span, budget = work.span, budget - length * work.batch
                taken.add(id(work))
                chunks.append(Chunk(work, work.done, length))
                added = True
                if budget <= 0 or len(chunks) == self.max_requests:
                    break
        return chunks

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            chunks = self._select()
            if not chunks:
                self._wake.clear()
                continue
            now = time.perf_counter()
            waits = [now - c.work.enqueued for c in chunks if c.work.started is None]
            for c in chunks:
                c.work.started = c.work.started or now
            self._computing, self._computed = [c.work for c in chunks], loop.create_future()
            try:
                finished = await loop.run_in_executor(self.executor, self._compute, chunks)
            except Exception as e:  # a bug, or a device error: fail this batch's requests, keep serving
                log.exception("batched forward of %d request(s) failed", len(chunks))
                for c in chunks:
                    self._complete(c.work, e)
                continue
            finally:
                self._computing = []
                self._computed.set_result(None)
            self.iterations += 1
            self.largest_batch = max(self.largest_batch, len(chunks))
            if self.on_batch:
                self.on_batch(len(chunks), sum(c.length * c.work.batch for c in chunks), waits)
            for work, result in finished:
                self._complete(work, result)

    def _complete(self, work: Work, result: Any) -> None:
        queue = self._queues.get(work.peer)
        if queue is not None and work in queue:
            queue.remove(work)
        if not work.future.done():
            if isinstance(result, BaseException):
                work.future.set_exception(result)
            else:
                work.future.set_result(result)

    def _compute(self, chunks: list[Chunk]) -> list[tuple[Work, Any]]:
        """On the compute thread: one packed forward, then the replies of the requests it completed."""
        base, finished = self.base, []
        inputs, segments, running = [], [], []
        for c in chunks:
            w = c.work
            if w._input is None:
                try:
                    wire.check_finite(w.received)
                except ProtocolError as e:
                    finished.append((w, e))
                    continue
                w._input = w.received.to(device=base.device, dtype=base.dtype)
            running.append(c)
            for r in range(w.batch):
                inputs.append(w._input[r, c.offset:c.offset + c.length])
                segments.append(Segment(c.length, w.start + c.offset, None if w.rows is None else w.rows[r]))
        if not running:
            return finished
        stack = running[0].work.stack
        with torch.inference_mode():
            out = run_packed(stack, torch.cat(inputs), segments, stack.start - base.start)
        at = 0
        for c in running:
            w = c.work
            n = c.length * w.batch
            w._parts.append(out[at:at + n].view(w.batch, c.length, -1))
            at += n
            w.done += c.length
            if w.done == w.tokens:
                output = w._parts[0] if len(w._parts) == 1 else torch.cat(w._parts, dim=1)
                try:
                    finished.append((w, w.finish(output)))
                except Exception as e:  # a reply that cannot be made (e.g. a non-finite output) fails alone
                    finished.append((w, e))
        return finished
