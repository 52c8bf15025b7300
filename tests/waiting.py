"""Readiness waits: poll until something holds, instead of sleeping a fixed time (issue 21).

Every wait is bounded. `until` returns the probe's last value, so the caller's own assertion (with
its own details) reports a wait that ran out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

from routing.planner import UNMEASURED_RTT

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


def until_routable(model, peer: str, timeout: float = 60.0) -> bool:  # noqa: ANN001 - an SDK RemoteModel
    """Re-read the swarm until `model`'s view holds `peer` answered and not avoided. A node is ready once
    it announced, but on a loaded machine a client's first read can miss a fresh record, or its first
    ping time out (the node is then avoided for a few seconds), and the client plans without it."""
    def probe() -> bool:
        model.client.run(model.view.refresh(force=True))
        return peer in model.view.rtt and peer not in model.view.bans

    return until(probe, timeout=timeout, interval=1.0)


def route_first(model, first: list[str], later: list[str]) -> None:  # noqa: ANN001 - an SDK RemoteModel
    """Make `model` try the `first` peers before the `later` ones: wait until it reached each, then count
    the others' round trips as a last resort's. A liar's claimed speed saves a step ~10 ms over an honest
    node announcing the tests' fixed 100 tokens/s, which a loaded machine's ping noise can outweigh."""
    unreached = [p[-8:] for p in first if not until_routable(model, p)]
    assert not unreached, f"the client never reached {unreached}"
    for peer in later:
        model.view.rtt[peer] = UNMEASURED_RTT
