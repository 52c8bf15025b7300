"""A node never closes a stream before its client does (up to LINGER_S): closing first let p2pd reset
the stream, and the reset dropped the last frames still on their way (a session's final result and
`closed` in a loaded CI run). The stream's ends here are asyncio's own, with a writer that records."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from node import streams
from node.limits import PeerBook, PeerLimits
from node.metrics import NodeMetrics
from routing import wire
from routing.errors import ErrorCode, ProtocolError

INFO = SimpleNamespace(peer_id=SimpleNamespace(to_base58=lambda: "client-peer"))


class Writer:
    """The node's end of the stream: what it wrote, and whether it closed it."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.frames.append(wire.unpack_frame(data[4:]))

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def _reply(reader: asyncio.StreamReader, writer: Writer) -> None:
    await wire.write_frame(writer, {"type": "reply"})


async def _refuse(reader: asyncio.StreamReader, writer: Writer) -> None:
    raise ProtocolError(ErrorCode.BAD_FRAME, "refused")


async def _forward(reader: asyncio.StreamReader, writer: Writer) -> None:
    """A forward's shape: work watched for the client's close, then the reply."""
    await streams.until_gone(reader, asyncio.sleep(0))
    await wire.write_frame(writer, {"type": "reply"})


@pytest.mark.parametrize("serve, last", [(_reply, "reply"), (_refuse, "error"), (_forward, "reply")])
async def test_the_node_closes_only_after_the_client(monkeypatch, serve, last):
    monkeypatch.setattr(streams, "LINGER_S", 60.0)
    reader, writer = asyncio.StreamReader(), Writer()
    book = PeerBook(PeerLimits(streams=4, sessions=4))
    task = asyncio.ensure_future(streams.guard(book, NodeMetrics(), lambda: serve(reader, writer), reader, writer,
                                               INFO))
    for _ in range(20):  # the handler is done and its frame written; the stream stays open
        await asyncio.sleep(0)
    assert [f["type"] for f in writer.frames] == [last] and not writer.closed and not task.done()
    assert book.streams["client-peer"] == 0  # a lingering stream no longer counts against the client's cap
    reader.feed_data(b"ignored")
    reader.feed_eof()  # the client closes: so does the node, at once
    await asyncio.wait_for(task, 10)
    assert writer.closed


async def test_a_client_that_never_closes_is_closed_on(monkeypatch):
    monkeypatch.setattr(streams, "LINGER_S", 0.01)
    reader, writer = asyncio.StreamReader(), Writer()
    await asyncio.wait_for(streams.guard(PeerBook(PeerLimits(streams=4, sessions=4)), NodeMetrics(),
                                         lambda: _reply(reader, writer), reader, writer, INFO), 10)
    assert writer.closed and [f["type"] for f in writer.frames] == ["reply"]


async def test_a_session_the_node_ends_gets_its_last_frame_before_its_stream_closes(monkeypatch):
    """An evicted, idle or drained session is told why on its stream (`Serving._tell`), then the stream
    closes LINGER_S later, not at once: in a loaded CI run an evicted client read a bare end of stream
    where `session_expired` should have been."""
    from node.serving import Serving

    monkeypatch.setattr(streams, "LINGER_S", 0.2)
    writer = Writer()
    session = SimpleNamespace(writer=writer, send=lambda frame: wire.write_frame(writer, frame))
    task = asyncio.ensure_future(Serving._tell(session, {"type": "error", "code": "session_expired"}))
    for _ in range(20):
        await asyncio.sleep(0)
    assert [f["code"] for f in writer.frames] == ["session_expired"] and not writer.closed
    await asyncio.wait_for(task, 10)
    assert writer.closed
