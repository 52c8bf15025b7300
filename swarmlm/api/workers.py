"""The gateway's generation threads, shared out fairly between clients.

A fixed number of worker threads (`--max-concurrency`) run generations. A client (its address: one
gateway has one API key, so the key cannot tell its users apart) runs at most `--max-per-client` at
once, so one client with many requests, read or not, always leaves workers for the others. Requests
beyond that wait in a bounded `FairQueue` and are started in turn across clients; when it is full
the request is refused with 429 and a `Retry-After` estimated from recent generation times.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Hashable, Protocol

from .errors import APIError
from .fair_queue import FairQueue

Client = Hashable
FIRST_GUESS_S = 10.0  # how long a generation takes, until one has been timed
SMOOTHING = 0.2  # weight of the newest duration in the running mean


class Job(Protocol):
    def run(self) -> None: ...
    def refuse(self, error: Exception) -> None: ...


def queue_full(retry_after_s: int) -> APIError:
    return APIError(429, f"the gateway is busy: every worker is taken and the queue is full; retry in "
                         f"{retry_after_s} s", type="rate_limit_error", code="queue_full",
                    headers={"Retry-After": str(retry_after_s)})


class Workers:
    def __init__(self, size: int, max_queue: int, max_per_client: int) -> None:
        self.size, self.max_per_client = size, max_per_client
        self.queue: FairQueue[Job] = FairQueue(max_queue)
        self.running: Counter[Client] = Counter()
        self.mean_run_s = FIRST_GUESS_S
        self._pool = ThreadPoolExecutor(size, thread_name_prefix="swarmlm-api")
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, client: Client, job: Job) -> None:
        """Start `job` now or queue it (call on the server's loop); raises 429 when it cannot wait."""
        self._loop = asyncio.get_running_loop()
        if self._busy() < self.size and self.running[client] < self.max_per_client:
            self._start(client, job)  # nobody eligible waits while a worker is free: dispatch leaves none
            return
        refused = self.queue.push(client, job)
        if refused is job:
            raise queue_full(self.retry_after_s())
        if refused is not None:
            refused.refuse(queue_full(self.retry_after_s()))
        self._dispatch()

    def withdraw(self, client: Client, job: Job) -> None:
        """The job's client left before it started: it no longer holds a place in the queue."""
        self.queue.remove(client, job)

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.mean_run_s * (len(self.queue) + 1) / self.size))

    def _busy(self) -> int:
        return sum(self.running.values())

    def _dispatch(self) -> None:
        """Fill free workers from the queue: clients running the fewest first, in turn among equals."""
        while self._busy() < self.size and len(self.queue):
            fewest = min(self.running[c] for c in self.queue.clients())
            nxt = self.queue.pop(lambda c: self.running[c] == fewest < self.max_per_client)
            if nxt is None:
                return
            self._start(*nxt)

    def _start(self, client: Client, job: Job) -> None:
        self.running[client] += 1
        started = self._loop.time()  # type: ignore[union-attr]
        self._pool.submit(job.run).add_done_callback(lambda _f: self._release(client, started))

    def _release(self, client: Client, started: float) -> None:
        """On the worker thread, once its job is over: hand the worker back on the server's loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._done, client, started)

    def _done(self, client: Client, started: float) -> None:
        self.running[client] -= 1
        if not self.running[client]:
            del self.running[client]
        took = self._loop.time() - started  # type: ignore[union-attr]
        self.mean_run_s += SMOOTHING * (took - self.mean_run_s)
        self._dispatch()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

