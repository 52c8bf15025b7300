"""Every stream a node serves: per-peer stream caps, read deadlines, typed error frames, abandoned work.

A request's first frame must begin within FIRST_FRAME_TIMEOUT and arrive in full at a minimum rate
(routing.wire.read_frame), large frames draw on the node's read budget, and each client peer may
hold at most `--peer-max-streams` streams. Work for a stream whose client has gone is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from routing import protocol, wire
from routing.errors import ErrorCode, ProtocolError
from routing.tasks import background

from .limits import PeerBook
from .metrics import NodeMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_FRAME_TIMEOUT = 10.0  # seconds for a request's first frame to begin: clients send it at once
LINGER_S = 0.5  # seconds a stream's last frame gets to reach the client before we close the stream
SMALL_REQUEST = 4096  # bytes: info and ledger requests are tiny; nothing bigger is read for them


def peer_of(info: StreamInfo) -> str:
    return info.peer_id.to_base58()


async def guard(book: PeerBook, metrics: NodeMetrics, serve: Callable[[], Awaitable[Any]],
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: StreamInfo,
                timed_as: str | None = None) -> None:
    """Run one stream's handler within its peer's stream cap; failures become error frames. After
    the node's last frame the client gets LINGER_S to close the stream first (see `linger`).

    A vanished client is not an error. `timed_as` records the whole request's duration under
    that handler label.
    """
    try:
        await _answer(book, metrics, serve, writer, peer_of(info), timed_as)
        await linger(reader)
    finally:
        writer.close()


async def _answer(book: PeerBook, metrics: NodeMetrics, serve: Callable[[], Awaitable[Any]],
                  writer: asyncio.StreamWriter, peer: str, timed_as: str | None) -> None:
    started = time.perf_counter()
    try:
        with book.stream(peer):
            await serve()
        if timed_as:
            metrics.rpc(timed_as, time.perf_counter() - started)
    except ProtocolError as e:
        metrics.error(e.code)
        log.debug("rejected frame from %s: [%s] %s", peer, e.code.value, e)
        await try_write(writer, protocol.Error.of(e).to_wire())
    except (asyncio.IncompleteReadError, ConnectionError):
        log.debug("stream from %s ended", peer)
    except Exception as e:  # a bug of ours: report it to the client, keep serving others
        metrics.error(ErrorCode.INTERNAL)
        log.exception("internal error serving %s", peer)
        await try_write(writer, protocol.Error(ErrorCode.INTERNAL.value, f"{type(e).__name__}: {e}").to_wire())


async def linger(reader: asyncio.StreamReader) -> None:
    """Before closing a stream, give the client LINGER_S to close it first (at once if it has).

    When our end closes while the client's is open, p2pd's pipe for the stream resets it instead of
    closing it now and then (its Close() stops reading, which the goroutine copying to us reads
    as an error and answers with a reset, before the close's FIN goes out), and a reset makes the
    client's p2pd drop what it has received but not yet handed over: the last frames we sent (a
    session's final result and `closed`, a reply, an error frame) vanish and the client sees only
    a closed stream, more often on a busy machine. A client that closes first meets none of this.
    What the client sends meanwhile is discarded."""
    async def drain() -> None:
        while await reader.read(1 << 16):
            pass

    try:
        await asyncio.wait_for(drain(), LINGER_S)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        pass


async def try_write(writer: asyncio.StreamWriter, frame: dict[str, Any]) -> None:
    try:
        await wire.write_frame(writer, frame)
    except (ConnectionError, RuntimeError):
        pass


async def until_gone(reader: asyncio.StreamReader, work: Awaitable[T]) -> T:
    """`work`'s result, cancelling it if the client closes the stream first (it sends nothing else)."""
    task = background(work, "a request's work")
    watch = background(reader.read(1), "a request stream's watch")
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            raise ConnectionError("the client closed the stream before its result was ready")
        return task.result()
    finally:  # its read ends before the stream lingers: a reader takes one waiter at a time
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
