"""A waiting stream sends keep-alive comments and still delivers every frame (in-process, no model)."""

from __future__ import annotations

import asyncio

from swarmlm.api.keepalive import KEEPALIVE, with_keepalive

TICK = 0.01  # seconds: the test waits on events, never on this


def test_ticks_while_waiting_then_the_frame_the_wait_was_for():
    async def scenario() -> list[bytes]:
        release = asyncio.Event()

        async def frames():
            yield b"first"
            await release.wait()  # a failover: nothing for a while
            yield b"second"

        out = with_keepalive(frames(), TICK)
        seen = [await anext(out), await anext(out), await anext(out)]
        release.set()
        seen += [frame async for frame in out]
        return seen

    assert asyncio.run(scenario()) == [b"first", KEEPALIVE, KEEPALIVE, b"second"]


def test_a_busy_stream_sends_no_comments():
    async def scenario() -> list[bytes]:
        async def frames():
            for i in range(3):
                yield str(i).encode()

        return [frame async for frame in with_keepalive(frames(), 3600)]

    assert asyncio.run(scenario()) == [b"0", b"1", b"2"]


def test_closing_the_stream_while_it_waits_closes_the_frames_underneath():
    async def scenario() -> list[str]:
        happened: list[str] = []

        async def frames():
            try:
                yield b"first"
                await asyncio.Event().wait()  # forever
                yield b"never"
            except asyncio.CancelledError:
                happened.append("cancelled")
                raise
            finally:
                happened.append("closed")  # where the gateway ends the generation

        out = with_keepalive(frames(), TICK)
        assert await anext(out) == b"first"
        assert await anext(out) == KEEPALIVE
        await out.aclose()
        return happened

    assert asyncio.run(scenario()) == ["cancelled", "closed"]
