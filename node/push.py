"""Pushed hops: node i sends a session's output straight to node i+1 (`swarmlm.push`).

One long-lived stream per pair of neighbours carries every session's pushes, so no push pays for
opening a stream; the node keeps it warm by measuring its round trip over it (`ping`/`pong`),
which is also the figure it announces for latency-aware routing. The receiver accepts a push only
for a session whose client named the pushing peer as its predecessor in a signed grant; anything
else is answered on the push stream with a `push_refused` error naming the session, and the pusher
tells that session's client (`push_failed`), who then relays the step itself. A push carries the
client's step ticket when its client signs them, and is computed only within what the tickets ask
for (node/step_budget.py): a replayed or grown push is refused the same way. In ring mode the
node serving the last block sends the token it sampled (`ring_token`, with any drafts after it) to
the node serving the first, its successor in the client's grant, which embeds them; ring steps carry the client's ring ticket
(node/ring.py). A node serving every block closes a ring alone: its ring tokens go to itself, through
the same checks as a peer's. The frames are declared in routing/protocol.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import torch
from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from ledger.schema import brief
from routing import protocol, wire
from routing.client import PeerLink
from routing.errors import ErrorCode, PeerFailure, ProtocolError, RoutingError
from routing.tasks import background

from .serving import Serving
from .streams import FIRST_FRAME_TIMEOUT, SMALL_REQUEST, guard, peer_of

log = logging.getLogger(__name__)
PUSH_OPEN_WAIT = 5.0  # a push may outrun its session's open frame by this much
IDLE_TIMEOUT = 900.0  # a push stream with no frame for this long is closed (pings keep used ones open)
MAX_IN_FLIGHT = 64  # pushes per stream being handled at once
PING_TIMEOUT = 10.0

Refused = Callable[[str, dict[str, Any]], Awaitable[None]]  # (the refusing peer, its error frame)


@dataclass
class _Outgoing:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pings: dict[int, asyncio.Future] = field(default_factory=dict)
    task: asyncio.Task | None = None


class PushLinks:
    """This node's outgoing push streams, one per successor, opened on first use and kept; a push to
    this node itself (a one-node ring's token, which libp2p cannot dial) is handed to `to_self`."""

    def __init__(self, link: PeerLink, on_refused: Refused) -> None:
        self.link, self.on_refused = link, on_refused
        self._out: dict[str, _Outgoing] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._ids = itertools.count()
        self._own: tuple[str, Callable[[dict[str, Any]], Awaitable[None]]] | None = None

    def to_self(self, own: str, receive: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Pushes to `own` (this node) go to `receive`, as a frame from the wire would."""
        self._own = own, receive

    async def send(self, peer: str, maddrs: list[str], push: protocol.Push | protocol.RingToken) -> None:
        if self._own is not None and peer == self._own[0]:
            # in the background: the pusher holds the session's lock, which the step this starts takes
            background(self._own[1](push.to_wire()), "a push to this node itself")
            return
        out = await self._stream(peer, maddrs)
        try:
            async with out.lock:
                await wire.write_frame(out.writer, push.to_wire())
        except (ConnectionError, RuntimeError) as e:
            self._forget(peer)
            raise PeerFailure(peer, f"push stream broken ({type(e).__name__})") from None

    async def ping(self, peer: str, maddrs: list[str]) -> float:
        """Round trip to `peer` over the push stream (opening it if needed), in seconds."""
        out = await self._stream(peer, maddrs)
        ping_id = next(self._ids)
        waiter = out.pings[ping_id] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        try:
            async with out.lock:
                await wire.write_frame(out.writer, protocol.Ping(ping_id).to_wire())
            await asyncio.wait_for(waiter, PING_TIMEOUT)
        except (ConnectionError, RuntimeError, asyncio.TimeoutError) as e:
            self._forget(peer)
            raise PeerFailure(peer, f"no pong ({type(e).__name__})") from None
        finally:
            out.pings.pop(ping_id, None)
        return time.perf_counter() - started

    async def _stream(self, peer: str, maddrs: list[str]) -> _Outgoing:
        if peer in self._out:
            return self._out[peer]
        async with self._opening.setdefault(peer, asyncio.Lock()):
            if peer not in self._out:
                if maddrs:
                    self.link.remember(peer, maddrs)
                reader, writer = await self.link.open_stream(peer, protocol.PUSH)
                try:
                    await wire.write_frame(writer, protocol.PushOpen().to_wire())
                except (ConnectionError, RuntimeError) as e:
                    raise PeerFailure(peer, f"push stream broken ({type(e).__name__})") from None
                out = self._out[peer] = _Outgoing(reader, writer)
                out.task = background(self._replies(peer, out), "a push stream's replies")
        return self._out[peer]

    async def _replies(self, peer: str, out: _Outgoing) -> None:
        """Pongs and refusals coming back on a push stream, until it breaks."""
        try:
            while True:
                frame = await wire.read_frame(out.reader, SMALL_REQUEST)
                if frame["type"] == protocol.Pong.TYPE:
                    waiter = out.pings.get(protocol.Pong.parse(frame).id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                elif frame["type"] == protocol.Error.TYPE:
                    await self.on_refused(peer, frame)
        except (asyncio.IncompleteReadError, ConnectionError, RoutingError):
            pass
        finally:
            if self._out.get(peer) is out:
                self._forget(peer)

    def _forget(self, peer: str) -> None:
        out = self._out.pop(peer, None)
        if out is not None:
            out.writer.close()
            for waiter in out.pings.values():
                waiter.cancel()
            if out.task is not None and out.task is not asyncio.current_task():
                out.task.cancel()

    async def close(self) -> None:
        for peer in list(self._out):
            self._forget(peer)


class PushReceiver:
    """The `swarmlm.push` handler: pushes from predecessors, checked against each session's grant."""

    def __init__(self, serving: Serving, run_step: Callable[..., Awaitable[bool]]) -> None:
        self.serving, self.run_step = serving, run_step

    async def handle(self, info: StreamInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.serving
        pusher = peer_of(info)
        write = asyncio.Lock()
        in_flight: set[asyncio.Task] = set()

        async def reply(frame: dict[str, Any]) -> None:
            async with write:
                await wire.write_frame(writer, frame)

        async def serve() -> None:
            protocol.opening(await wire.read_frame(reader, SMALL_REQUEST, idle_timeout=FIRST_FRAME_TIMEOUT),
                             protocol.PushOpen)
            while True:
                frame = await wire.read_frame(reader, s.max_frame, idle_timeout=IDLE_TIMEOUT, budget=s.read_budget)
                if frame["type"] == protocol.Ping.TYPE:
                    await reply(protocol.Pong(protocol.Ping.parse(frame).id).to_wire())
                    continue
                if frame["type"] not in (protocol.Push.TYPE, protocol.RingToken.TYPE):  # parsed in `_one`: a bad
                    # push is refused, the stream kept
                    raise ProtocolError(ErrorCode.BAD_FRAME,
                                        f"unexpected {brief(frame['type'])} frame on a push stream")
                if len(in_flight) >= MAX_IN_FLIGHT:
                    await reply(_refusal(frame, ErrorCode.BUSY, f"more than {MAX_IN_FLIGHT} pushes in flight"))
                    continue
                task = background(self._one(pusher, frame, reply), "one push")
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)

        await guard(s.book, s.metrics, serve, reader, writer, info)

    async def from_self(self, own: str, frame: dict[str, Any], refused: Refused) -> None:
        """A push this node (`own`) sent itself, checked as any other; a refusal goes to `refused`."""
        await self._one(own, frame, lambda refusal: refused(own, refusal))

    async def _one(self, pusher: str, frame: dict[str, Any], reply: Callable[[dict[str, Any]], Awaitable[None]]
                   ) -> None:
        s = self.serving
        ticket = ring = token = None
        try:
            push: protocol.Push | protocol.RingToken = protocol.one_of(frame, (protocol.Push, protocol.RingToken),
                                                                        "on a push stream")
            data = push.hidden.get("data") if isinstance(push, protocol.Push) else None
            session = await s.wait_session(push.client, push.session, PUSH_OPEN_WAIT,
                                           len(data) if isinstance(data, bytes) else 0)
            if session is None or session.prev_peer != pusher:
                raise ProtocolError(ErrorCode.PUSH_REFUSED, f"no session {push.session!r} of client "
                                                            f"{push.client:.60} names you as its predecessor on "
                                                            "this node")
            if isinstance(push, protocol.RingToken):
                hidden, token = self._ring_input(push, session.stack.start), push.token
            else:
                _check_forward(push.blocks, session.stack.start)
                hidden = s.decode_hidden(push.hidden, session.batch)
            spend = dict(client=push.client, session=push.session, start=push.start, shape=hidden.shape)
            if isinstance(push, protocol.RingToken) or push.ring_ticket is not None:
                ring = session.budget.spend_ring(push.ring_ticket, **spend)
            else:
                ticket = session.budget.spend(push.ticket, **spend)
            # NaN or infinity is the pusher's fault: refused to it (its client relays instead), never
            # computed and reported to our client as if we had failed.
            await asyncio.get_running_loop().run_in_executor(None, wire.check_finite, hidden)
        except ProtocolError as e:
            s.stats.error(e.code)
            await _reply_quietly(reply, _refusal(frame, e.code, str(e)))
            return
        if not await self.run_step(session, hidden, push.start, push=True, pusher=pusher, ticket=ticket, ring=ring,
                                   token=token):
            await _reply_quietly(reply, _refusal(frame, ErrorCode.PUSH_REFUSED, f"session {push.session} was "
                                                 "re-routed: you are no longer its predecessor"))


    def _ring_input(self, ring: protocol.RingToken, start: int) -> torch.Tensor:
        """The embedding of a ring's token and drafts, sent by the node serving the last block to us, serving
        the first."""
        s = self.serving
        if s.ring_head is None or start != 0 or ring.blocks[1] != s.num_blocks:
            raise ProtocolError(ErrorCode.PUSH_REFUSED, "a ring token goes from the node serving the last block to "
                                                        "one serving the first that holds the embeddings")
        return s.ring_head.embed([ring.token, *ring.drafts])


async def _reply_quietly(reply: Callable[[dict[str, Any]], Awaitable[None]], frame: dict[str, Any]) -> None:
    """A refusal to a pusher that may already be gone."""
    try:
        await reply(frame)
    except (ConnectionError, RuntimeError):
        pass


def _check_forward(blocks: tuple[int, int] | None, start: int) -> None:
    """Pushes only move forward: from the span that ends where this one begins. Honest nodes name
    their own span, so grants a client crafted into a cycle (A pushes to B, B back to A) stop at the
    first backward hop instead of recomputing the same step forever."""
    if blocks is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, "a push names the pusher's blocks as [start, end]")
    if blocks[1] != start:
        raise ProtocolError(ErrorCode.PUSH_REFUSED, f"a push must come from the span ending at block {start}, where "
                                                    f"this session begins; yours ends at {blocks[1]}")


def _refusal(frame: dict[str, Any], code: ErrorCode, message: str) -> dict[str, Any]:
    """An error frame that names the session and step it is about, so the pusher can tell that session's
    client which step to relay; taken from the push as sent, which may be the reason it is refused."""
    return protocol.Error(code.value, message, protocol.named(frame, "client", protocol.CLIENT),
                          protocol.named(frame, "session", protocol.SESSION),
                          protocol.named(frame, "start", protocol.uint())).to_wire()
