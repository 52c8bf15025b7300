"""Inference sessions: the client's stream to one node, and steps arriving relayed or pushed.

Frames on the client's stream (`swarmlm.inference`, declared in routing/protocol.py): `open` (with
an optional signed push grant naming this node's predecessor and successor), then any of `step` (with
the client's signed step ticket, spent here whether the step was relayed or pushed, and travelling on
with a pushed one: node/step_budget.py), `route`
(new neighbours after a failover) and `close`. The node reads ahead while a step computes, so a
client that goes away cancels its step. A step's result goes back on this stream; with a grant
naming a successor, the output is pushed to it first and the client gets a copy, off the critical
path. A failed step is an error frame on this stream, whether it came from the client or was pushed.
A `ring` frame arms a node serving the last block to sample each next token and send it on to the
first node instead of pushing (node/ring.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import torch
from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from routing import protocol, wire
from routing.errors import ErrorCode, ProtocolError, RoutingError
from routing.grants import RingTicket
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
            session = s.open_session(protocol.opening(frame, protocol.Open), peer_of(info), writer)
            holder.append(session)
            await session.send(protocol.Opened(session.session_id, session.max_length,
                                               wire.dtype_name(s.dtype)).to_wire())
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
                if not s.holds(session):
                    return  # the node ended it and told the client why
                if await self._frame(session, frame, upcoming):
                    return
        finally:  # the read ahead ends before the stream lingers: a reader takes one waiter at a time
            upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)

    async def _frame(self, session: NodeSession, raw: dict[str, Any], upcoming: asyncio.Future) -> bool:
        """Handle one client frame; True when the session is closed."""
        s = self.serving
        try:
            frame = protocol.one_of(raw, protocol.SESSION_FRAMES, "in a session")
            if frame.session != session.session_id:
                raise ProtocolError(ErrorCode.UNKNOWN_SESSION, f"session {frame.session!r} is not open on "
                                                               f"this stream (open: {session.session_id!r})")
            if isinstance(frame, protocol.Close):
                if frame.length is not None and frame.length > session.length:
                    raise ProtocolError(ErrorCode.BAD_FRAME, f"'length' must be 0..{session.length}")
                s.close(session, frame.receipt, frame.length)
                await session.send(protocol.Closed(session.session_id, session.tokens, session.accepted).to_wire())
                return True
            if isinstance(frame, protocol.Ring):
                if s.ring_head is None or session.stack.end != s.num_blocks:
                    raise ProtocolError(ErrorCode.BAD_FRAME, "this node cannot close a ring for this session: it "
                                                             "holds no head, or does not serve the last block")
                armed = s.ring_head.arm(frame, session.client, session.session_id)
                async with session.lock:  # between steps: a step samples under one ring or the other
                    session.ring = armed
                return False
            if isinstance(frame, protocol.Route):
                async with session.lock:  # a step pushed by the old neighbour ends before "routed" goes out,
                    s.route(session, frame)  # so the client knows every result before it is stale
                    await session.send(protocol.Routed(session.session_id).to_wire())
                return False
            assert isinstance(frame, protocol.Step)
            hidden = s.decode_hidden(frame.hidden, session.batch)
            # a relayed step's ticket is spent too: a late push of an earlier step is then refused, not
            # allowed to rewind over this one (node/step_budget.py)
            ticket = session.budget.spend(frame.ticket, client=session.client, session=session.session_id,
                                          start=frame.start, shape=hidden.shape) \
                if frame.push or frame.ticket is not None else None
        except ProtocolError as e:
            await self._refuse(session, e)
            return False
        task = background(self.step(session, hidden, frame.start, push=frame.push, ticket=ticket), "a session step")
        await asyncio.wait({task, upcoming}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and upcoming.done() and _gone(upcoming):
            task.cancel()  # the client is gone: its step is not worth computing
            await asyncio.gather(task, return_exceptions=True)
            raise ConnectionError("the client closed its session stream mid-step")
        await task
        return False

    async def step(self, session: NodeSession, hidden: torch.Tensor, start: int, *, push: bool,
                   pusher: str | None = None, ticket: dict[str, Any] | None = None, ring: RingTicket | None = None,
                   token: int | None = None) -> bool:
        """Compute one step, push its output on when asked (with the client's step `ticket`, or the
        `ring` ticket of a ring step, whose input embeds `token` and drafts), judge its drafts and
        sample the ring's next token when this node closes it, and send the client its result (or why not).

        A step `pusher` pushed is dropped (False) when the client re-routed it away while the step
        waited for the session: its result would reach the client after "routed", as a stale one."""
        s = self.serving
        try:
            async with session.lock:
                if pusher is not None and session.prev_peer != pusher:
                    return False
                began = time.perf_counter()
                held = session.length
                index, done = await s.step(session, hidden, start)
                compute_ms = round((time.perf_counter() - began) * 1000, 3)
                if log.isEnabledFor(logging.DEBUG):  # a line per step: nothing built for it unless asked
                    log.debug("session %s step %d: positions %d..%d, %s, held %d", session.session_id, index, start,
                              start + hidden.shape[1] - 1, f"pushed by {pusher[-8:]}" if pusher else
                              "from the client" + (", to push on" if push else ""), held)
                attestation = (s.attestation(session.session_id, index, start, session.stack, done)
                               if session.attesting else None)
                pushed, push_failed = False, None
                nxt = session.next_peer
                blocks = (session.stack.start, session.stack.end)
                onward: protocol.Frame | None = None
                kept, drafts = 0, []
                if session.ring is not None and nxt is not None and session.ring.due(
                        start, hidden.shape[1], session.budget.ring, pushed=push):
                    assert s.ring_head is not None  # armed only on a node holding it
                    sampled = await s.ring_head.sample(session.ring, done.hidden, start, s.hidden_size)
                    token, kept, drafts = sampled.token, sampled.kept, sampled.drafts
                    if sampled.onward:
                        onward = protocol.RingToken(session.client, session.session_id, sampled.at, token, blocks,
                                                    session.ring.ticket.to_wire(), drafts)
                elif push and nxt is not None and session.stack.end < s.num_blocks:  # never past the last block
                    onward = protocol.Push(session.client, session.session_id, start, done.hidden, blocks,
                                           ticket, ring.to_wire() if ring else None)
                if onward is not None:
                    try:
                        await self.pushes.send(nxt, session.next_maddrs, onward)
                        pushed = True
                    except RoutingError as e:
                        log.info("session %s: push to %s failed (%s); the client relays", session.session_id,
                                 nxt[-8:], e)
                        push_failed = str(e)[:4096]
                await session.send(protocol.Result(done.hidden, step=index, start=start, compute_ms=compute_ms,
                                                   attestation=attestation, pushed=pushed, push_failed=push_failed,
                                                   ring=ring.seq if ring else None, token=token, kept=kept,
                                                   drafts=drafts).to_wire())
        except ProtocolError as e:
            await self._refuse(session, e)
        return True

    async def _refuse(self, session: NodeSession, error: ProtocolError) -> None:
        self.serving.stats.error(error.code)
        try:
            await session.send(protocol.Error.of(error).to_wire())
        except (ConnectionError, RuntimeError):
            pass


def _gone(read: asyncio.Future) -> bool:
    """Whether a read ahead failed because the stream ended (a bad frame only gets its error frame)."""
    error = read.exception()
    return isinstance(error, (asyncio.IncompleteReadError, ConnectionError)) or (
        isinstance(error, ProtocolError) and error.code in UNSYNCABLE)
