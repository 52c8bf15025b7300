"""The suite's one readiness wait (tests/waiting.py): it stops as soon as the condition holds and
gives up after its timeout with the last value seen, for the caller's assertion to report."""

import asyncio
import itertools

from tests.waiting import auntil, until


def test_until_returns_the_first_value_that_is_done_or_the_last_one_seen() -> None:
    counter = itertools.count()
    assert until(lambda: next(counter), lambda n: n >= 3, interval=0) == 3
    assert until(lambda: [], timeout=0.05, interval=0.01) == []  # gave up: falsy, the caller asserts


def test_auntil_lets_the_loop_run_between_probes() -> None:
    async def scenario() -> tuple[bool, bool]:
        seen: list[int] = []
        task = asyncio.get_running_loop().call_later(0.02, seen.append, 1)
        ok = await auntil(lambda: seen, timeout=2)
        task.cancel()
        return bool(ok), bool(await auntil(lambda: False, timeout=0.03))

    assert asyncio.run(scenario()) == (True, False)
