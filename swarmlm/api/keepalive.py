"""Streams that never go silent: an SSE comment whenever no frame came for a while.

While the swarm fails over (or waits for a node to come back), a stream may send nothing for tens
of seconds; proxies (nginx's default read timeout is 60 s) and clients give up on a silent
connection first. A comment line (`: keep-alive`) is ignored by every SSE parser, OpenAI's
included, but keeps bytes flowing.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

KEEPALIVE = b": keep-alive\n\n"
DEFAULT_INTERVAL_S = 15.0


async def with_keepalive(frames: AsyncIterator[bytes], interval: float) -> AsyncIterator[bytes]:
    """`frames` as they come, with KEEPALIVE after every `interval` seconds without one.

    The wait for a frame is never cancelled by a tick (cancelling it would cancel the generation
    underneath); closing this iterator closes `frames`.
    """
    pending: asyncio.Task[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(frames.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield KEEPALIVE
                continue
            try:
                frame = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield frame
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.wait({pending})
        await frames.aclose()  # type: ignore[attr-defined]
