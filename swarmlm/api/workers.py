"""The gateway's generation slots, shared out fairly between clients.

At most `--max-concurrency` generations run at once, each a task on the server's event loop. A client (its address: one
gateway has one API key, so the key cannot tell its users apart) runs at most `--max-per-client` at
once, so one client with many requests, read or not, always leaves slots for the others. Requests
beyond that wait in a bounded `FairQueue` and are started in turn across clients; when it is full
the request is refused with 429 and a `Retry-After` estimated from recent generation times.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Hashable, Protocol

from routing.tasks import background

from .errors import APIError
from .fair_queue import FairQueue

Client = Hashable
FIRST_GUESS_S = 10.0  # how long a generation takes, until one has been timed
SMOOTHING = 0.2  # weight of the newest duration in the running mean


class Job(Protocol):
    async def run(self) -> None: ...
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
        self.tasks: set[asyncio.Future] = set()

    def submit(self, client: Client, job: Job) -> None:
        """Start `job` now or queue it (call on the server's loop); raises 429 when it cannot wait."""
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
        started = asyncio.get_running_loop().time()
        task = background(job.run(), "a generation")
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, client, started))

    def _done(self, task: asyncio.Future, client: Client, started: float) -> None:
        self.tasks.discard(task)
        self.running[client] -= 1
        if not self.running[client]:
            del self.running[client]
        took = asyncio.get_running_loop().time() - started
        self.mean_run_s += SMOOTHING * (took - self.mean_run_s)
        self._dispatch()

    async def drain(self) -> None:
        """Refuse what waits and wait for the running jobs (cancel them first: their sessions then close)."""
        while (waiting := self.queue.pop()) is not None:
            waiting[1].refuse(APIError(503, "the gateway is shutting down", type="service_unavailable"))
        if self.tasks:
            await asyncio.wait(set(self.tasks))

