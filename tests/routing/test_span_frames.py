"""A client's span session against a scripted node in this process: the frames it builds are the
declared ones, and the node's replies (results, errors, notices, malformed frames) are read as such."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable

import pytest
import torch

from ledger.keys import Identity
from routing import protocol, wire
from routing.chain import _refused
from routing.errors import PeerFailure, RemoteError
from routing.grants import accept_ticket
from routing.planner import Hop
from routing.span import SpanSession
from tests.routing.nodes import node

HIDDEN = 4
Reply = Callable[[dict[str, Any]], list[dict[str, Any]]]


def doubled(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """An honest node's replies: opened, each step's input times two, routed, closed."""
    if frame["type"] == "open":
        opened = protocol.opening(frame, protocol.Open)
        return [protocol.Opened(opened.session, opened.max_length, "float32").to_wire()]
    step = protocol.one_of(frame, protocol.SESSION_FRAMES, "in a session")
    if isinstance(step, protocol.Step):
        x = wire.decode_tensor(step.hidden, hidden_size=HIDDEN, max_tokens=8, max_batch=1)
        return [protocol.Result(wire.encode_tensor(x * 2), step=0, start=step.start, compute_ms=3.0).to_wire()]
    if isinstance(step, protocol.Route):
        return [protocol.Routed(step.session).to_wire()]
    return [protocol.Closed(step.session, 3, 3).to_wire()]


class ScriptedNode:
    """A PeerLink whose one stream reaches `reply`, which answers each frame the client sends."""

    request_timeout = 5.0

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.received: list[dict[str, Any]] = []
        self.task: asyncio.Future | None = None

    async def open_stream(self, peer: str, handler: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert handler == protocol.INFERENCE
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        self.task = asyncio.ensure_future(self._serve(*await asyncio.open_unix_connection(sock=ours)))
        return reader, writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                frame = await wire.read_frame(reader)
                self.received.append(frame)
                for reply in self.reply(frame):
                    await wire.write_frame(writer, reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def _span(link: ScriptedNode) -> SpanSession:
    peer = Identity.generate().peer_id
    return SpanSession(link, Hop(peer, 0, 10, node(peer, 0, 10)), "ab" * 32, "s-1", 16,  # type: ignore[arg-type]
                       torch.float32, identity=Identity.generate(), attest=False)


def _run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def test_open_step_route_close_send_the_declared_frames_and_read_their_replies() -> None:
    link, x = ScriptedNode(doubled), torch.randn(1, 3, HIDDEN)

    async def scenario() -> tuple[torch.Tensor, SpanSession]:
        span = _span(link)
        await span.open()
        out = await span.step(x, 0)
        await span.route(None, None)
        await span.close(b"receipt")
        return out, span

    out, span = _run(scenario)
    assert torch.equal(out, x * 2) and span.timing["node"] == pytest.approx(0.003)
    opened, step, route, close = link.received
    assert protocol.opening(opened, protocol.Open) == protocol.Open(
        "ab" * 32, "s-1", 16, blocks=(0, 10), reply_dtype="float32", attest=False, grant=opened["grant"],
        tickets=True)
    assert "step" not in step and protocol.Step.parse(step) == protocol.Step("s-1", 0, step["hidden"],
                                                                            ticket=step["ticket"])
    assert protocol.Route.parse(route).grant["session"] == "s-1"
    assert protocol.Close.parse(close) == protocol.Close("s-1", b"receipt", 3)


def test_an_error_frame_is_a_remote_error_with_its_code() -> None:
    def refusing(frame: dict[str, Any]) -> list[dict[str, Any]]:
        if frame["type"] == "step":
            return [protocol.Error("cache_full", "no pages").to_wire()]
        return doubled(frame)

    async def scenario() -> None:
        span = _span(ScriptedNode(refusing))
        await span.open()
        await span.step(torch.randn(1, 2, HIDDEN), 0)

    with pytest.raises(RemoteError) as e:
        _run(scenario)
    assert (e.value.code, e.value.remote_message) == ("cache_full", "no pages")


@pytest.mark.parametrize("bad", [{"type": "result"}, {"type": "result", "hidden": 5},
                                 {"type": "result", "hidden": {}, "compute_ms": -1}, {"type": "closed"}])
def test_a_malformed_or_unexpected_reply_is_a_peer_failure(bad: dict[str, Any]) -> None:
    def lying(frame: dict[str, Any]) -> list[dict[str, Any]]:
        return [bad] if frame["type"] == "step" else doubled(frame)

    async def scenario() -> None:
        span = _span(ScriptedNode(lying))
        await span.open()
        await span.step(torch.randn(1, 2, HIDDEN), 0)

    with pytest.raises(PeerFailure):
        _run(scenario)


def test_a_push_failed_notice_goes_to_the_notices_not_in_place_of_a_result() -> None:
    def noticing(frame: dict[str, Any]) -> list[dict[str, Any]]:
        notice = [protocol.PushFailed("s-1", "push_refused", "not its predecessor").to_wire()]
        return notice + doubled(frame) if frame["type"] == "step" else doubled(frame)

    async def scenario() -> tuple[torch.Tensor, protocol.PushFailed]:
        span = _span(ScriptedNode(noticing))
        await span.open()
        out = await span.step(torch.ones(1, 1, HIDDEN), 0)
        return out, span.notices.get_nowait()

    out, notice = _run(scenario)
    assert torch.equal(out, torch.full((1, 1, HIDDEN), 2.0))
    assert notice == protocol.PushFailed("s-1", "push_refused", "not its predecessor")


def test_a_refusal_of_an_earlier_steps_push_is_not_taken_for_this_steps() -> None:
    """A successor refuses a late push the client had relayed already (its ticket is spent); the pusher's
    notice of it may reach the client during the next step, which must not be relayed for it."""
    async def scenario() -> protocol.PushFailed:
        span = _span(ScriptedNode(doubled))
        for start in (4, 5):
            span.notices.put_nowait(protocol.PushFailed("s-1", "push_refused", "ticket spent", start))
        return await asyncio.wait_for(_refused(span, 5), 5)

    assert _run(scenario).start == 5


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "relayed"])
def test_every_step_carries_the_clients_ticket_for_exactly_its_positions(push: bool) -> None:
    """The ticket's seq is a step's id, spent once per node: a pushed step is computed once along the
    chain, and a relayed step's later seq orders it after any push that arrives late."""
    link, x = ScriptedNode(doubled), torch.randn(1, 3, HIDDEN)

    async def scenario() -> SpanSession:
        span = _span(link)
        await span.open()
        await span.send_step(x, 5, push=push)
        await span.result(x, 5)
        await span.step(x[:, :1], 8)
        span.abort()
        return span

    span = _run(scenario)
    step, after = (protocol.Step.parse(frame) for frame in link.received[1:3])
    assert step.push is push and step.start == 5
    signed, later = (accept_ticket(s.ticket, client=span.identity.peer_id, session="s-1") for s in (step, after))
    assert (signed.start, signed.tokens, signed.batch) == (5, 3, 1)
    assert (later.start, later.tokens) == (8, 1) and later.seq > signed.seq
