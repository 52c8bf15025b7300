"""Readiness waits: poll until something holds, instead of sleeping a fixed time (issue 21).

Every wait is bounded. `until` returns the probe's last value, so the caller's own assertion (with
its own details) reports a wait that ran out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def until(probe: Callable[[], T], done: Callable[[T], object] = bool, *, timeout: float = 30.0,
          interval: float = 0.2) -> T:
    """Call `probe` until `done` holds for what it returns, or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


async def auntil(probe: Callable[[], T], done: Callable[[T], object] = bool, *, timeout: float = 5.0,
                 interval: float = 0.01) -> T:
    """`until` on an event loop: the loop runs on between probes."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)
