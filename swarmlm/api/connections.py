"""Connection limits beneath the app: a cap on open connections, and deadlines for a request's head,
its body and a client that stops reading.

uvicorn's own knobs stop short of a hostile client: `timeout_keep_alive` closes only idle connections
between requests, and `limit_concurrency` answers 503 only once a head is parsed, so 1,100 connections
that each send half a request line are held forever and the open-file limit is reached. So uvicorn's
HTTP protocol is wrapped (`Limits.protocol`, given to uvicorn as its `http` class):

- a connection beyond `max_connections`, or beyond `per_client` from one address (trusted proxies
  excepted), gets a 503 and is closed as soon as it is accepted: one address cannot fill the cap;
- a connection that has not completed a request head within `head_timeout` of opening (or of the end
  of its previous request) is closed;

and the app is wrapped (`Limits.middleware`), knowing its connection through a context variable that
uvicorn's request task inherits from the wrapper's `data_received`:

- a body must arrive within `body_timeout` of its head (408, then the connection is closed);
- a response that cannot be sent for `send_timeout` (the transport's small buffer stays full: the
  client is not reading) closes the connection, which ends the stream and stops its generation.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .errors import APIError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITE_BUFFER = 8 << 10  # bytes buffered per connection (and asked of the kernel): a stalled reader is seen soon
OVER_CAPACITY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n"
                 b"connection: close\r\ncontent-length: 36\r\n\r\nthe gateway has too many connections")
_CURRENT: contextvars.ContextVar[_Connection] = contextvars.ContextVar("swarmlm_api_connection")


@dataclass
class Limits:
    max_connections: int
    head_timeout: float
    body_timeout: float
    send_timeout: float
    per_client: int
    trusted: frozenset[str] = frozenset()  # reverse proxies: their connections are many clients'
    live: set[_Connection] = field(default_factory=set)
    by_address: Counter[str] = field(default_factory=Counter)

    def admit(self, address: str) -> bool:
        if len(self.live) >= self.max_connections:
            return False
        return address in self.trusted or self.by_address[address] < self.per_client

    def protocol(self, **uvicorn_args: Any) -> asyncio.Protocol:
        """uvicorn's h11 protocol (what its "auto" picks without httptools) behind the cap and the head deadline;
        the gateway serves no websockets, so no protocol switch takes a connection out of the wrapper."""
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return _Connection(self, H11Protocol(**uvicorn_args))

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return _Deadlines(app, self)


class _Connection(asyncio.Protocol):
    def __init__(self, limits: Limits, inner: asyncio.Protocol) -> None:
        self.limits, self.inner = limits, inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.address = ""
        self.requests = 0  # in the app now (pipelined requests may overlap by a moment)
        self.close_when_done = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses, but alike
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, (tuple, list)) else ""
        if not self.limits.admit(self.address):
            transport.write(OVER_CAPACITY)
            transport.close()
            return
        self.admitted = True
        self.limits.live.add(self)
        self.limits.by_address[self.address] += 1
        transport.set_write_buffer_limits(high=WRITE_BUFFER)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # and no kernel buffer that grows to megabytes for a client that reads nothing
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WRITE_BUFFER)
        self.inner.connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.limits.live.discard(self)
        self.limits.by_address[self.address] -= 1
        if not self.limits.by_address[self.address]:
            del self.limits.by_address[self.address]
        self._cancel_deadline()
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        token = _CURRENT.set(self)  # a request task created while parsing inherits it
        try:
            self.inner.data_received(data)  # type: ignore[attr-defined]
        finally:
            _CURRENT.reset(token)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[attr-defined,no-any-return]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_started(self) -> None:
        self.requests += 1
        self._cancel_deadline()

    def request_finished(self) -> None:
        self.requests -= 1
        if self.close_when_done:
            self.close()
        elif not self.requests:
            self._await_head()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without flushing what the client did not read."""
        if self.transport is not None:
            self.transport.abort()

    def _await_head(self) -> None:
        self._cancel_deadline()
        if self.transport is not None and not self.transport.is_closing():
            self._deadline = asyncio.get_running_loop().call_later(self.limits.head_timeout, self.close)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class _Deadlines:
    """ASGI middleware: the body and send deadlines of the request's connection."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = _CURRENT.get(None)
        if scope["type"] != "http" or conn is None:
            await self.app(scope, receive, send)
            return
        conn.request_started()
        try:
            await self.app(scope, self._receive(receive, conn), self._send(send, conn))
        finally:
            conn.request_finished()

    def _receive(self, receive: Receive, conn: _Connection) -> Receive:
        deadline = asyncio.get_running_loop().time() + self.limits.body_timeout
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:  # e.g. the wait for a disconnect while generating: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                conn.close_when_done = True
                raise APIError(408, f"the request body did not arrive within {self.limits.body_timeout:g} s",
                               code="request_timeout") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return receive_in_time

    def _send(self, send: Send, conn: _Connection) -> Send:
        async def send_in_time(message: Message) -> None:
            try:
                async with asyncio.timeout(self.limits.send_timeout):
                    await send(message)
            except TimeoutError:
                conn.abort()  # the app sees a disconnect: a stream ends and its generation stops

        return send_in_time
