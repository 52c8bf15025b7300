"""Tasks started in the background, whose outcome is always collected.

asyncio keeps only a weak reference to a task, and logs "Task exception was never retrieved" for
one that failed and was never awaited. A stream's reader or a step whose client went away ends in
`ConnectionError` or a cancellation nobody waits for; those are expected and logged at debug level,
anything else as a warning with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

from .errors import RoutingError

log = logging.getLogger(__name__)

EXPECTED = (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, RoutingError)

_running: set[asyncio.Future] = set()


def background(work: Awaitable[Any], what: str) -> asyncio.Future:
    """`work` as a task that stays referenced until done and whose failure is logged, not lost."""
    task = asyncio.ensure_future(work)
    _running.add(task)
    task.add_done_callback(lambda t: _collect(t, what))
    return task


def _collect(task: asyncio.Future, what: str) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    e = task.exception()
    if e is None:
        return
    if isinstance(e, EXPECTED):
        log.debug("%s ended: %s: %s", what, type(e).__name__, e)
    else:
        log.warning("%s failed", what, exc_info=e)
