"""Pushed hops (real processes): nodes push outputs along the chain; only named predecessors may push."""

from __future__ import annotations

import asyncio

import pytest
import torch

from routing import wire
from routing.client import SwarmClient
from routing.grants import grant, ticket
from swarmlm.sdk import RemoteModel

from .raw import RawSession, output

PROMPT = "What is the capital of France?"


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "relayed"])
def test_pushed_and_relayed_generation_equal_local(swarm3, default_store, local_model, push):
    with RemoteModel.connect(swarm3.initial_peers, default_store.path, push=push) as model:
        with model.inference_session(max_length=128) as s:
            g = s.generate(PROMPT, 24, ignore_eos=True)
            relayed = s.runner.relayed_steps
    assert g.token_ids == local_model.generate(PROMPT, 24, ignore_eos=True).token_ids
    assert relayed == 0


@pytest.fixture(scope="module")
def two(swarm3):
    """The nodes serving blocks 0:10 and 10:20, and two clients: the session's owner and a stranger."""
    first = next(n for n in swarm3.nodes if n.blocks == (0, 10))
    second = next(n for n in swarm3.nodes if n.blocks == (10, 20))
    owner, stranger = SwarmClient(swarm3.initial_peers), SwarmClient(swarm3.initial_peers)
    for c in (owner, stranger):
        for n in (first, second):
            c.remember(n.peer_id, n.maddrs)
    yield first, second, owner, stranger
    owner.close()
    stranger.close()


async def _push(link, peer: str, frame: dict, timeout: float = 60) -> dict:
    reader, writer = await link.open_stream(peer, "swarmlm.push")
    try:
        await wire.write_frame(writer, {"type": "push_open", "v": wire.PROTOCOL_VERSION})
        await wire.write_frame(writer, frame)
        return await asyncio.wait_for(wire.read_frame(reader), timeout)
    finally:
        writer.close()


def test_pushes_from_an_unnamed_peer_or_for_an_unknown_session_are_refused(two, default_store, local_model):
    first, second, owner, stranger = two
    root = default_store.root
    x = torch.randn(1, 3, 576)

    async def go():
        g = grant(owner.identity, session="guarded", node=second.peer_id, prev=first.peer_id, next=None, root=root,
                  blocks=(10, 20))
        s = RawSession(owner, second.peer_id, root, "guarded", 32, blocks=[10, 20], grant=g.to_wire())
        opened = await s.open()
        push = {"type": "push", "client": owner.peer_id, "session": "guarded", "start": 0,
                "hidden": wire.encode_tensor(torch.randn(1, 3, 576))}
        intruder = await _push(stranger, second.peer_id, push)  # the stranger is not the named predecessor
        unknown = await _push(stranger, second.peer_id, {**push, "session": "no-such-session"})
        mine = output(await s.step(0, 3, x), 3)  # the session is unharmed: its first step is still step 0
        await s.close()
        return opened, intruder, unknown, mine

    opened, intruder, unknown, mine = owner.run(go(), timeout=120)
    assert opened["type"] == "opened"
    for refusal in (intruder, unknown):
        assert refusal["type"] == "error" and refusal["code"] == "push_refused"
    assert (intruder["client"], intruder["session"]) == (owner.peer_id, "guarded")
    with torch.inference_mode():
        expected = local_model.stack.narrow(10, 20)(x)
    assert float((mine - expected).norm() / expected.norm()) < 1e-5


def test_a_grant_signed_by_someone_else_is_refused_at_open(two, default_store):
    first, second, owner, stranger = two
    forged = grant(stranger.identity, session="forged", node=second.peer_id, prev=first.peer_id, next=None,
                   root=default_store.root, blocks=(10, 20))

    async def go():
        s = RawSession(owner, second.peer_id, default_store.root, "forged", 32, blocks=[10, 20], grant=forged.to_wire())
        try:
            return await s.open()
        finally:
            s.abort()

    reply = owner.run(go(), timeout=60)
    assert reply["code"] == "bad_frame" and "grant" in reply["message"]


def test_a_grant_naming_a_node_its_own_neighbour_loops_nothing_and_the_client_is_told(two, default_store,
                                                                                        local_model):
    """An attacker's grant names the node serving 10:20 as its own predecessor and successor: its push to
    itself (handed over locally, not dialled) meets the same checks as a peer's and is refused, since a
    push must come from the span ending where the session begins; the client is told, nothing is
    computed twice, and the session goes on."""
    _, second, owner, _ = two
    x = torch.randn(1, 3, 576)

    async def go():
        g = grant(owner.identity, session="loop", node=second.peer_id, prev=second.peer_id, next=second.peer_id,
                  root=default_store.root, blocks=(10, 20))
        s = RawSession(owner, second.peer_id, default_store.root, "loop", 32, blocks=[10, 20], grant=g.to_wire(),
                       next_maddrs=second.maddrs)
        opened = await s.open()
        await wire.write_frame(s.writer, {"type": "step", "session": "loop", "start": 0,
                                          "hidden": wire.encode_tensor(x), "push": True})
        frames = [await s.read(), await s.read()]
        after = await s.step(3, 1)  # the session still serves, and no looped step came in between
        await s.close()
        return opened, frames, after

    opened, frames, after = owner.run(go(), timeout=120)
    assert opened["type"] == "opened"
    result = next(f for f in frames if f["type"] == "result")
    failed = next(f for f in frames if f["type"] == "push_failed")
    assert failed["code"] == "push_refused" and "span ending at block 10" in failed["message"]
    assert failed["start"] == 0
    assert after["type"] == "result" and after["start"] == 3
    with torch.inference_mode():
        expected = local_model.stack.narrow(10, 20)(x)
    assert float((output(result, 3) - expected).norm() / expected.norm()) < 1e-5


def test_a_late_push_of_an_earlier_step_cannot_rewind_the_steps_relayed_since(two, default_store):
    """The predecessor's push of positions 0..2 arrives after the client relayed them and one more itself
    (the pusher died or was cut off, and the client went on). Each relayed step spent a later ticket, so
    the late push is refused as spent: before, it was computed, rewinding the session to 3 positions,
    and the client's next step met `bad_position` (the 32-node scale test's failure)."""
    _, second, owner, stranger = two
    root, sid = default_store.root, "late-push"

    def signed(start: int, n: int) -> dict:
        return ticket(owner.identity, session=sid, start=start, tokens=n, batch=1).to_wire()

    def step(start: int, n: int) -> dict:
        return {"type": "step", "session": sid, "start": start, "hidden": wire.encode_tensor(torch.randn(1, n, 576)),
                "ticket": signed(start, n)}

    async def go():
        late = {"type": "push", "client": owner.peer_id, "session": sid, "start": 0, "blocks": [0, 10],
                "hidden": wire.encode_tensor(torch.randn(1, 3, 576)), "ticket": signed(0, 3)}
        g = grant(owner.identity, session=sid, node=second.peer_id, prev=stranger.peer_id, next=None, root=root,
                  blocks=(10, 20))
        s = RawSession(owner, second.peer_id, root, sid, 32, blocks=[10, 20], grant=g.to_wire(), tickets=True)
        await s.open()
        relayed = [await s.send(step(0, 3)), await s.send(step(3, 1))]
        try:
            refusal = await _push(stranger, second.peer_id, late, timeout=20)
        except asyncio.TimeoutError:
            refusal = None  # computed: a pushed step's result goes to the client, nothing back to the pusher
        after = await s.send(step(4, 1))
        await s.close()
        return relayed, refusal, after

    relayed, refusal, after = owner.run(go(), timeout=120)
    assert [f["type"] for f in relayed] == ["result", "result"]
    assert refusal is not None and refusal["code"] == "push_refused" and "spent" in refusal["message"], refusal
    assert refusal["start"] == 0  # its pusher tells the client which step, so no later step is relayed for it
    assert after["type"] == "result" and after["start"] == 4, after
