"""Inference sessions: the client's stream to one node, and steps arriving relayed or pushed.

Frames on the client's stream (`swarmlm.inference`, see routing/wire.py): `open` (with an optional
signed push grant naming this node's predecessor and successor), then any of `step` (a pushed one
with the client's signed step ticket, which travels on with it: node/step_budget.py), `route`
(new neighbours after a failover) and `close`. The node reads ahead while a step computes, so a
client that goes away cancels its step. A step's result goes back on this stream; with a grant
naming a successor, the output is pushed to it first and the client gets a copy, off the critical
path. A failed step is an error frame on this stream, whether it came from the client or was pushed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import torch
from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from routing import wire
from routing.errors import ErrorCode, ProtocolError, RoutingError
from routing.tasks import background

from .push import PushLinks
from .serving import Serving
from .sessions import NodeSession
from .streams import FIRST_FRAME_TIMEOUT, guard, peer_of

log = logging.getLogger(__name__)
UNSYNCABLE = (ErrorCode.TOO_LARGE, ErrorCode.TIMEOUT)  # after an oversized or unfinished frame the stream is lost


class Inference:
    def __init__(self, serving: Serving, pushes: PushLinks) -> None:
        self.serving, self.pushes = serving, pushes

    async def handle(self, info: StreamInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.serving
        holder: list[NodeSession] = []

        async def serve() -> None:
            frame = await wire.read_frame(reader, s.max_frame, idle_timeout=FIRST_FRAME_TIMEOUT, budget=s.read_budget)
            wire.check_opening(frame, "open")
            session = s.open_session(frame, peer_of(info), writer)
            holder.append(session)
            await session.send({"type": "opened", "session": session.session_id, "max_length": session.max_length,
                                "dtype": wire.dtype_name(s.dtype)})
            await self._serve_session(session, reader)

        try:
            await guard(s.book, s.metrics, serve, reader, writer, info)
        finally:
            if holder:  # the stream ended without a close frame: still log the session, unreceipted
                s.close(holder[0], None)

    async def _serve_session(self, session: NodeSession, reader: asyncio.StreamReader) -> None:
        s = self.serving

        def read() -> asyncio.Future:
            return background(wire.read_frame(reader, s.max_frame, budget=s.read_budget,
                                                         idle_timeout=s.config.session_timeout + FIRST_FRAME_TIMEOUT),
                              "a session's next frame")

        upcoming = read()
        try:
            while True:
                try:
                    frame = await upcoming
                except ProtocolError as e:
                    if e.code in UNSYNCABLE:
                        raise
                    await self._refuse(session, e)
                    upcoming = read()
                    continue
                upcoming = read()  # read ahead: a client gone mid-step cancels the step
                if session.key not in s.sessions:
                    return  # the node ended it and told the client why
                if await self._frame(session, frame, upcoming):
                    return
        finally:
            upcoming.cancel()

    async def _frame(self, session: NodeSession, frame: dict[str, Any], upcoming: asyncio.Future) -> bool:
        """Handle one client frame; True when the session is closed."""
        s = self.serving
        try:
            if frame.get("session") != session.session_id:
                raise ProtocolError(ErrorCode.UNKNOWN_SESSION, f"session {frame.get('session')!r:.80} is not open on "
                                                               f"this stream (open: {session.session_id!r})")
            kind = frame["type"]
            if kind == "close":
                length = frame.get("length")
                if length is not None and not (type(length) is int and 0 <= length <= session.length):
                    raise ProtocolError(ErrorCode.BAD_FRAME, f"'length' must be 0..{session.length}")
                s.close(session, frame.get("receipt"), length)
                await session.send({"type": "closed", "session": session.session_id, "tokens": session.tokens,
                                    "accepted_tokens": session.accepted})
                return True
            if kind == "route":
                async with session.lock:  # a step pushed by the old neighbour ends before "routed" goes out,
                    s.route(session, frame)  # so the client knows every result before it is stale
                    await session.send({"type": "routed", "session": session.session_id})
                return False
            if kind != "step":
                raise ProtocolError(ErrorCode.BAD_FRAME, f"unexpected '{kind:.40}' frame in a session")
            start = wire.field(frame, "start", int, minimum=0)
            hidden = s.decode_hidden(frame, session.batch)
            push = frame.get("push") is True
            ticket = session.budget.spend(frame.get("ticket"), client=session.client, session=session.session_id,
                                          start=start, shape=hidden.shape) if push else None
        except ProtocolError as e:
            await self._refuse(session, e)
            return False
        task = background(self.step(session, hidden, start, push=push, ticket=ticket), "a session step")
        await asyncio.wait({task, upcoming}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and upcoming.done() and _gone(upcoming):
            task.cancel()  # the client is gone: its step is not worth computing
            await asyncio.gather(task, return_exceptions=True)
            raise ConnectionError("the client closed its session stream mid-step")
        await task
        return False

    async def step(self, session: NodeSession, hidden: torch.Tensor, start: int, *, push: bool,
                   pusher: str | None = None, ticket: dict[str, Any] | None = None) -> bool:
        """Compute one step, push its output on when asked (with the client's step `ticket`, if it
        came with one), and send the client its result (or why not).

        A step `pusher` pushed is dropped (False) when the client re-routed it away while the step
        waited for the session: its result would reach the client after "routed", as a stale one."""
        s = self.serving
        try:
            async with session.lock:
                if pusher is not None and session.prev_peer != pusher:
                    return False
                began = time.perf_counter()
                index, done = await s.step(session, hidden, start)
                reply: dict[str, Any] = {"type": "result", "step": index, "start": start, "hidden": done.hidden,
                                         "compute_ms": round((time.perf_counter() - began) * 1000, 3)}
                if session.attesting:
                    reply["attestation"] = s.attestation(session.session_id, index, start, session.stack, done)
                nxt = session.next_peer
                if push and nxt is not None:
                    try:
                        await self.pushes.send(nxt, session.next_maddrs, {
                            "type": "push", "client": session.client, "session": session.session_id,
                            "start": start, "blocks": [session.stack.start, session.stack.end],
                            "hidden": done.hidden, **({"ticket": ticket} if ticket is not None else {})})
                        reply["pushed"] = True
                    except RoutingError as e:
                        log.info("session %s: push to %s failed (%s); the client relays", session.session_id,
                                 nxt[-8:], e)
                        reply["push_failed"] = str(e)
                await session.send(reply)
        except ProtocolError as e:
            await self._refuse(session, e)
        return True

    async def _refuse(self, session: NodeSession, error: ProtocolError) -> None:
        self.serving.stats.error(error.code)
        try:
            await session.send(wire.error_frame(error.code, str(error)))
        except (ConnectionError, RuntimeError):
            pass


def _gone(read: asyncio.Future) -> bool:
    """Whether a read ahead failed because the stream ended (a bad frame only gets its error frame)."""
    error = read.exception()
    return isinstance(error, (asyncio.IncompleteReadError, ConnectionError)) or (
        isinstance(error, ProtocolError) and error.code in UNSYNCABLE)
