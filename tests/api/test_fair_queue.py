"""Fair shares of the gateway's workers, in process: the queue's turns and push-outs, the pool's per-client cap."""

from __future__ import annotations

import asyncio

import pytest

from swarmlm.api.errors import APIError
from swarmlm.api.fair_queue import FairQueue
from swarmlm.api.workers import Workers

from ..waiting import auntil


def _drain(queue: FairQueue[str]) -> list[str]:
    out = []
    while (nxt := queue.pop()) is not None:
        out.append(nxt[1])
    return out


def test_clients_take_turns_instead_of_first_come_first_served() -> None:
    q: FairQueue[str] = FairQueue(100)
    for i in range(5):
        q.push("greedy", f"g{i}")
    q.push("honest", "h0")
    q.push("other", "o0")
    q.push("honest", "h1")
    assert _drain(q) == ["g0", "h0", "o0", "g1", "h1", "g2", "g3", "g4"]


def test_a_full_queue_pushes_out_the_largest_holders_newest_request() -> None:
    q: FairQueue[str] = FairQueue(4)
    for i in range(4):
        assert q.push("greedy", f"g{i}") is None
    assert q.push("greedy", "g4") == "g4"  # it holds the most already: refused itself
    assert q.push("honest", "h0") == "g3"
    assert q.push("honest", "h1") == "g2"
    assert q.push("honest", "h2") == "h2"  # 2 and 2: pushing out would only swap who is unfair
    assert len(q) == 4 and _drain(q) == ["g0", "h0", "g1", "h1"]


def test_pop_skips_clients_that_are_not_eligible_and_remove_takes_a_request_back() -> None:
    q: FairQueue[str] = FairQueue(10)
    q.push("a", "a0")
    q.push("a", "a1")
    q.push("b", "b0")
    assert q.pop(lambda c: c != "a") == ("b", "b0")
    assert q.pop(lambda c: c != "a") is None
    assert q.remove("a", "a0") and not q.remove("a", "a0") and q.waiting("a") == 1
    assert _drain(q) == ["a1"] and len(q) == 0


class _Job:
    """Runs until released, like a generation whose client does not read."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.release = asyncio.Event()
        self.refused: Exception | None = None

    async def run(self) -> None:
        self.log.append(self.name)
        await asyncio.wait_for(self.release.wait(), 30)

    def refuse(self, error: Exception) -> None:
        self.refused = error


def test_one_client_never_holds_every_worker_and_a_full_queue_answers_429_with_retry_after() -> None:
    async def scenario() -> None:
        workers = Workers(size=4, max_queue=3, max_per_client=2)
        started: list[str] = []
        greedy = [_Job(f"g{i}", started) for i in range(5)]
        for job in greedy:
            workers.submit("greedy", job)
        assert await auntil(lambda: len(started) == 2), "greedy's first two start"
        honest = _Job("h0", started)
        workers.submit("honest", honest)  # two workers are still free for everybody else
        assert await auntil(lambda: "h0" in started), "honest starts at once"
        with pytest.raises(APIError) as refused:
            workers.submit("greedy", _Job("g5", started))
        assert refused.value.status == 429 and int(refused.value.headers["Retry-After"]) >= 1
        late = _Job("late", started)
        workers.submit("late", late)
        assert await auntil(lambda: "late" in started), "a newcomer takes the last free worker"
        third = _Job("third", started)
        workers.submit("third", third)  # every worker busy, the queue full of greedy's: its newest is pushed out
        assert greedy[4].refused is not None and greedy[4].refused.status == 429  # type: ignore[attr-defined]
        greedy[0].release.set()
        assert await auntil(lambda: "third" in started), "the freed worker goes to the client running fewest"
        assert "g2" not in started
        honest.release.set()
        assert await auntil(lambda: "g2" in started), "then greedy's turn comes"
        for job in [*greedy, honest, late, third]:
            job.release.set()
        await workers.drain()
        assert not workers.running

    asyncio.run(scenario())
