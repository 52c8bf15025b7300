"""Attacks on the nodes' RPCs (issue 11), on a real 3-node swarm: streams and frames from fresh
identities. Each attack gets its typed refusal (never `internal`), the nodes stay up within the
stated memory bounds, and honest clients still get exactly their local greedy answer."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from typing import Any

import pytest
import torch

from ledger import canonical
from routing import wire
from routing.grants import grant, ticket
from tests.swarm.raw import HIDDEN, RawSession
from tests.waiting import until

from . import valid
from .attacker import (FORWARD, INFERENCE, INFO, LEDGER, PUSH, Attacker, Deep, frame, fresh_session,
                       group_rss, header, metrics, serve_entries, tensor)
from .conftest import TOKENS

MIB = 1 << 20
NESTED = Deep(1000)  # 1 KB of msgpack, a list nested 1000 deep
HUGE = (1 << 64) - 1


def _forward(root: str, shape: tuple[int, ...] = (1, 2, HIDDEN), **fields: Any) -> bytes:
    return frame({"type": "forward", "v": wire.PROTOCOL_VERSION, "root": root, "hidden": tensor(shape), **fields})


def _open(root: str, session: str, **fields: Any) -> bytes:
    return frame({"type": "open", "v": wire.PROTOCOL_VERSION, "root": root, "session": session, "max_length": 16,
                  **fields})


def _computed_tokens(node: Any) -> float:
    """Tokens the node's scheduler has computed (all iterations), once the count stops moving."""
    last = -1.0
    for _ in range(60):
        now = metrics(node)["swarmlm_batch_tokens_sum"]
        if now == last:
            return now
        last = now
        time.sleep(1.0)
    raise AssertionError("the node never went quiet")


# ---- frames ----------------------------------------------------------------------------------------

def test_hostile_field_values_get_typed_refusals(attacker, nodes, root, honest):
    """`reply_dtype` as a list or a map, `v: true`, a value nested 1000 deep in any field; none of the
    refused opens counts against the sender's session cap."""
    peer = nodes[0, 10].peer_id
    cases = {
        "forward reply_dtype list": (FORWARD, [_forward(root, reply_dtype=["float32"])], "bad_frame"),
        "forward reply_dtype map": (FORWARD, [_forward(root, reply_dtype={"float32": 1})], "bad_frame"),
        "open reply_dtype list": (INFERENCE, [_open(root, "r1", reply_dtype=["float32"])], "bad_frame"),
        "open reply_dtype map": (INFERENCE, [_open(root, "r2", reply_dtype={})], "bad_frame"),
        "info v true": (INFO, [frame({"type": "info", "v": True})], "version"),
        "forward v true": (FORWARD, [frame({"type": "forward", "v": True})], "version"),
        "open v true": (INFERENCE, [frame({"type": "open", "v": True})], "version"),
        "push v true": (PUSH, [frame({"type": "push_open", "v": True})], "version"),
        "ledger v true": (LEDGER, [frame({"type": "ledger", "v": True, "op": "checkpoint"})], "version"),
        "info v 1.0": (INFO, [frame({"type": "info", "v": 1.0})], "version"),
        "info v nested": (INFO, [frame({"type": "info", "v": NESTED})], "bad_frame"),
        "forward blocks nested": (FORWARD, [_forward(root, blocks=NESTED)], "bad_frame"),
        "forward dtype nested": (FORWARD, [_forward(root, hidden={**tensor((1, 1, HIDDEN)), "dtype": NESTED})],
                                 "bad_frame"),
        "open batch nested": (INFERENCE, [_open(root, "r3", batch=NESTED)], "bad_frame"),
        "push client nested": (PUSH, [frame({"type": "push_open", "v": 1}),
                                      frame({"type": "push", "client": NESTED, "session": "s", "start": 0})],
                               "bad_frame"),
        "ledger op nested": (LEDGER, [frame({"type": "ledger", "v": 1, "op": NESTED})], "bad_frame"),
    }
    # each case on its own stream, all at once (fewer than --peer-max-streams): a refusal lingers
    # half a second before its stream closes, so one after the other they took most of a minute
    replies = attacker.start(*(attacker.exchange(peer, handler, payloads, idle=30)
                               for handler, payloads, _ in cases.values())).result(timeout=300)
    assert {name: r.codes for name, r in zip(cases, replies)} == {name: [code] for name, (_, _, code) in cases.items()}
    # refused opens cost nothing: more of them than the per-peer session cap, then a valid one is served
    opens = [_open(root, f"refused-{i}", reply_dtype=["float32"]) for i in range(20)]
    refused = attacker.start(*(attacker.exchange(peer, INFERENCE, [o]) for o in opens)).result(timeout=300)
    assert [r.codes for r in refused] == [["bad_frame"]] * 20
    assert attacker.send(peer, INFERENCE, [_open(root, "after-refusals")]).codes[:1] == ["opened"]
    honest()


def test_ledger_indices_of_2_64_minus_1_are_bad_frames(attacker, nodes, honest):
    """Indices past what SQLite holds are refused as the request's fault, and the ledger still answers."""
    peer = nodes[0, 10].peer_id
    requests = [{"op": "entries", "start": HUGE, "end": HUGE}, {"op": "consistency", "size1": HUGE, "size2": HUGE},
                {"op": "inclusion", "index": HUGE, "size": HUGE}, {"op": "entries", "start": 0, "end": HUGE}]
    got = [attacker.send(peer, LEDGER, [frame({"type": "ledger", "v": 1, **r})]).codes for r in requests]
    assert got == [["bad_frame"]] * len(requests)
    assert attacker.send(peer, LEDGER, [frame({"type": "ledger", "v": 1, "op": "checkpoint"})]).codes == ["ledger"]
    honest()


def test_nan_and_infinite_hidden_states_are_never_computed_on(attacker, nodes, root, honest):
    """NaN or an infinity anywhere in a forward or a step: `bad_tensor`, no result and no
    attestation; the session that got one goes on."""
    peer = nodes[0, 10].peer_id

    def poisoned(value: float) -> dict[str, Any]:
        x = torch.randn(1, 3, HIDDEN)
        x[0, 1, 7] = value
        return wire.encode_tensor(x)

    forwards = {value: attacker.send(peer, FORWARD, [_forward(root, hidden=poisoned(value))]).codes
                for value in (float("nan"), float("inf"), float("-inf"))}
    assert forwards == {value: ["bad_tensor"] for value in forwards}

    async def session() -> tuple[list[str], dict[str, Any]]:
        s = RawSession(attacker.link, peer, root, fresh_session(), 16)
        x = torch.randn(1, 3, HIDDEN)
        replies = [await s.open(), await s.step(0, 3, x * float("nan")), await s.step(0, 3, x)]
        replies.append(await s.close())
        return [r.get("code", r["type"]) for r in replies], replies[2]

    codes, result = attacker.run(session())
    assert codes == ["opened", "bad_tensor", "result", "closed"]
    assert "attestation" in result
    honest()


def test_a_bad_frame_read_ahead_of_a_step_is_refused_after_it_not_instead(attacker, nodes, root, honest):
    """A node reads the next frame while a step computes. A bad one used to pass for the client
    leaving: the step was cancelled mid-compute and its cache pages freed under the compute thread
    (IndexError, failing every request batched with it). Now the step is answered, then the bad
    frame refused, and the session goes on."""
    node, sid = nodes[0, 10], fresh_session()
    step = frame({"type": "step", "session": sid, "step": 0, "start": 0, "hidden": tensor((1, 8, HIDDEN))})
    reply = attacker.send(node.peer_id, INFERENCE, [_open(root, sid), step, header(0),
                                                    frame({"type": "close", "session": sid})])
    assert reply.codes == ["opened", "result", "bad_frame", "closed"]
    assert "Traceback" not in open(node.log).read()
    honest()


# ---- receipts --------------------------------------------------------------------------------------

RECEIPTS = {"nested bytes": valid.deep_list_bytes(1000), "nested value": NESTED, "random bytes": os.urandom(300),
            "a map": {"session": "x"}, "someone else's": canonical.pack(valid.receipt().to_wire()), "2^64-1": HUGE}


def test_garbage_receipts_at_close_still_get_the_session_logged(attacker, nodes, root, honest):
    """Whatever the receipt, the close is answered (`closed`, or `bad_frame` for a frame nested
    past the frame bounds, and the session then ends with its stream) and the node's ledger gets
    the session's `serve` entry, unreceipted."""
    node = nodes[0, 10]

    async def close_with(receipt: Any) -> tuple[str, str]:
        sid = fresh_session()
        s = RawSession(attacker.link, node.peer_id, root, sid, 16)
        await s.open()
        await s.step(0, 3)
        s.writer.write(frame({"type": "close", "session": sid, "receipt": receipt}))
        reply = await s.read()
        s.abort()
        return sid, reply.get("code", reply["type"])

    closed = {name: attacker.run(close_with(receipt)) for name, receipt in RECEIPTS.items()}
    assert {name: code for name, (_, code) in closed.items()} == {
        name: "bad_frame" if name == "nested value" else "closed" for name in RECEIPTS}
    for sid, _ in closed.values():
        [entry] = [e for e in serve_entries(node, session=sid) if e.session == sid]
        assert (entry.client, entry.tokens, entry.receipt) == (attacker.peer_id, 3, None)
    honest()


def test_a_session_reopened_by_its_client_replaces_the_old_one_and_by_no_one_else(attacker, accomplice, nodes,
                                                                                    root, honest):
    """A client whose stream went silent (a relay that stalls keeps it open) opens its session again
    on a fresh stream: it used to be refused (`session is already open`) until the old stream died,
    and the client ran out of nodes. Now the re-open replaces the session: the old stream is told
    `session_expired`, the new one steps from 0, the old stream's end closes nothing, and both are
    logged. The same session ID from another identity is its own session, untouched."""
    node, sid = nodes[0, 10], fresh_session()

    async def reopen() -> tuple[list[str], list[str]]:
        old = RawSession(attacker.link, node.peer_id, root, sid, 16)
        theirs = RawSession(accomplice.link, node.peer_id, root, sid, 16)
        new = RawSession(attacker.link, node.peer_id, root, sid, 16)
        first = [(await old.open())["type"], (await old.step(0, 3))["type"], (await theirs.open())["type"]]
        second = [(await new.open())["type"], (await old.read()).get("code", "")]
        old.abort()  # the old stream's end must not close the session that replaced it
        second += [(await new.step(0, 4))["type"], (await theirs.step(0, 2))["type"], (await new.close())["type"],
                   (await theirs.close())["type"]]
        return first, second

    first, second = attacker.run(reopen())
    assert first == ["opened", "result", "opened"]
    assert second == ["opened", "session_expired", "result", "result", "closed", "closed"]
    logged = until(lambda: [(e.client, e.tokens) for e in serve_entries(node, session=sid) if e.session == sid],
                   lambda entries: len(entries) == 3)
    assert sorted(logged) == sorted([(attacker.peer_id, 3), (attacker.peer_id, 4), (accomplice.peer_id, 2)])
    honest()


# ---- memory and streams ----------------------------------------------------------------------------

def test_idle_sessions_of_max_length_8192_reserve_nothing_and_give_way_to_others(attacker, accomplice, nodes, root,
                                                                                  honest):
    """Two identities open sessions of the node's maximum length: nothing is reserved. They fill
    the whole 1024-token pool (each its half-pool share) and go idle: after `--evict-idle-after`
    (5 s) an honest client takes the pages it needs, and the session that lost them is told
    `session_expired`."""
    node = nodes[0, 10]

    async def hog(who: Attacker) -> tuple[RawSession, int]:
        s = RawSession(who.link, node.peer_id, root, fresh_session(), 8192)
        assert (await s.open())["type"] == "opened"
        used = (await who.link.ping(node.peer_id))[1].raw["load"]["cache_tokens_used"]
        assert (await s.step(0, 512))["type"] == "result"
        return s, used

    (first, reserved), (second, _) = attacker.run(hog(attacker)), accomplice.run(hog(accomplice))
    assert reserved == 0
    assert attacker.info(node)["load"]["cache_tokens_free"] == 0
    time.sleep(6)
    honest()
    told = attacker.run(first.read())  # the least recently used gave way first
    first.abort()
    second.abort()
    assert told["code"] == "session_expired"


def test_a_step_needing_more_pages_than_are_free_evicts_enough_idle_ones(swarm, attacker, accomplice, nodes, root):
    """Idle sessions hold 15 of the 16 pages; a newcomer's 128-token step needs 2. Eviction must free
    what the step needs, not what it lacks beyond the free pages (which, being 1 <= 1 free, once
    evicted nothing and answered cache_full)."""
    node = nodes[0, 10]

    async def hold(who: Attacker, tokens: int) -> RawSession:
        s = RawSession(who.link, node.peer_id, root, fresh_session(), 1024)
        assert (await s.open())["type"] == "opened"
        assert (await s.step(0, tokens))["type"] == "result"
        return s

    first, second = attacker.run(hold(attacker, 512)), accomplice.run(hold(accomplice, 448))
    assert attacker.info(node)["load"]["cache_tokens_free"] == 64
    time.sleep(6)  # both idle past --evict-idle-after
    newcomer = Attacker(swarm.initial_peers, swarm.nodes)
    try:
        third = newcomer.run(hold(newcomer, 128))
        third.abort()
    finally:
        newcomer.close()
    told = attacker.run(first.read())  # the least recently used gave way
    first.abort()
    second.abort()
    assert told["code"] == "session_expired"


@pytest.mark.parametrize("handler", [INFO, FORWARD, INFERENCE, PUSH, LEDGER])
def test_ten_streams_promising_64_mib_frames_are_cut_at_the_header(attacker, nodes, handler, honest):
    """Ten streams each declare a 64 MiB frame and trickle up to 24 MiB of it (1 MiB pieces): each
    is refused at its header (the handler's frame cap) before 8 MiB of it were sent, and the node's
    process group grows by less than 64 MiB meanwhile (bound stated here, peak sampled)."""
    node = nodes[20, 30]
    before = group_rss(node)
    peak = [before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak.append(group_rss(node))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        replies = attacker.start(*(
            attacker.exchange(node.peer_id, handler, [header(64 * MIB), bytes(24 * MIB)], piece=MIB, pace=0.02,
                              idle=10) for _ in range(10))).result(timeout=300)
    finally:
        sampling.set()
        sampler.join()
    print(f"{handler}: node group RSS {before / MIB:.0f} MiB before, peak {max(peak) / MIB:.0f} MiB, "
          f"after {group_rss(node) / MIB:.0f} MiB; sent {[r.sent // MIB for r in replies]} MiB")
    assert all(r.ended == "closed" and set(r.codes) <= {"too_large"} and r.sent < 8 * MIB for r in replies)
    assert max(peak) - before < 64 * MIB
    honest()


def test_slowloris_streams_are_cut_by_read_deadlines_while_others_are_served(attacker, nodes, root, honest):
    """Streams that send a header promising 1000 bytes and then nothing, send nothing at all, or
    stall mid-session: each gets `timeout` (first frame within 10 s, a begun frame within 10 s
    plus its size at 1 MiB/s) and is closed, while an honest client is served meanwhile."""
    peer = nodes[0, 10].peer_id
    stalls = [stall for _ in range(3) for stall in ([header(1000), b"\x85"], [],
                                                     [_open(root, fresh_session()), header(5000), b"\x85\xa4type"])]
    stalled = attacker.start(*(attacker.exchange(peer, INFERENCE, p, idle=60) for p in stalls))
    honest()
    replies = stalled.result(timeout=120)
    assert [r.codes for r in replies] == [["timeout"], ["timeout"], ["opened", "timeout"]] * 3
    assert all(r.ended == "closed" for r in replies)


# ---- compute ---------------------------------------------------------------------------------------

MAX_FORWARD = (1, 512, HIDDEN)  # --max-batch-tokens: the largest stateless forward a node takes


def test_a_flood_of_max_size_forwards_starves_no_honest_client(attacker, accomplice, nodes, root, honest):
    """Two identities, four streams each, send back-to-back 512-token stateless forwards to the
    first node for as long as an honest client generates. Forwards beyond the pages they may hold
    (a quarter of the pool, at least one max-size forward) are refused `busy` or `peer_limit`, the
    rest compute in fair turns with the honest sessions' steps, which always find cache pages.
    Times are printed, not asserted."""
    peer = nodes[0, 10].peer_id
    baseline = honest()
    flooding, codes = [True], Counter()

    async def flood(who: Attacker) -> None:
        while flooding[0]:
            reply = await who.exchange(peer, FORWARD, [_forward(root, MAX_FORWARD)], idle=120)
            codes.update(reply.codes)
            if reply.codes != ["result"]:
                await asyncio.sleep(0.05)

    floods = [who.start(*(flood(who) for _ in range(4))) for who in (attacker, accomplice)]
    time.sleep(2)  # the flood is under way before the honest client starts
    try:
        attacked = honest()
    finally:
        flooding[0] = False
        for f in floods:
            f.result(timeout=300)
    print(f"honest client, connect + {TOKENS} tokens: {baseline:.1f} s alone, {attacked:.1f} s under a flood of "
          f"max-size forwards ({dict(codes)})")
    assert set(codes) <= {"result", "busy", "peer_limit"} and codes["result"] > 0


def test_a_forward_refused_for_want_of_pages_gives_back_those_it_took(swarm, attacker, accomplice, nodes, root,
                                                                     honest):
    """Two others hold 10 of the node's 16 pages; a two-row forward needing 8 gets the first row's
    4, then `cache_full` for the second: those 4 come back with the refusal."""
    node = nodes[20, 30]
    third = Attacker(swarm.initial_peers, [node])

    async def hold(who: Attacker, tokens: int) -> RawSession:
        s = RawSession(who.link, node.peer_id, root, fresh_session(), 1024)
        await s.open()
        assert (await s.step(0, tokens))["type"] == "result"
        return s

    try:
        held = [accomplice.run(hold(accomplice, 512)), third.run(hold(third, 128))]
        used = attacker.info(node)["load"]["cache_tokens_used"]
        refused = attacker.send(node.peer_id, FORWARD, [_forward(root, (2, 250, HIDDEN))]).codes
        after = attacker.info(node)["load"]["cache_tokens_used"]
        for s in held:
            s.abort()
    finally:
        third.close()
    assert (used, refused, after) == (640, ["cache_full"], 640)
    honest()


def test_forwards_whose_client_hangs_up_are_not_computed(attacker, nodes, root, honest):
    """A 512-token forward runs as four 128-token chunks: answered, it adds exactly 512 to the
    node's computed tokens (swarmlm_batch_tokens). Four more, each hung up 20 ms after it was sent,
    add less than half of their 2048: at most the chunk running when the hang-up is seen (a chunk
    takes about 100 ms here), the rest is dropped."""
    node = nodes[20, 30]
    forward = _forward(root, MAX_FORWARD)
    before = _computed_tokens(node)
    assert attacker.send(node.peer_id, FORWARD, [forward]).codes == ["result"]
    answered = _computed_tokens(node)
    for _ in range(4):
        attacker.send(node.peer_id, FORWARD, [forward], pace=0.02, hang_up=True)
        time.sleep(0.5)  # its pages come back before the next one asks
    abandoned = _computed_tokens(node) - answered
    print(f"computed {abandoned:.0f} tokens of four abandoned 512-token forwards")
    assert answered - before == 512
    assert abandoned <= 2048 // 2
    honest()


# ---- pushes ----------------------------------------------------------------------------------------

def test_pushes_from_an_unnamed_peer_are_refused_and_a_named_ones_poison_is_bad_tensor(attacker, accomplice, nodes,
                                                                                       root, honest):
    """The session on 10:20 names the accomplice as its predecessor: a push from anyone else, or
    for another session, is `push_refused`; an infinite push from the accomplice is `bad_tensor`
    to the pusher (the fault is its own: the session's client is not told its node failed, see
    test_malformed_replies.py), and the session goes on."""
    node, sid = nodes[10, 20], fresh_session()
    g = grant(attacker.link.identity, session=sid, node=node.peer_id, prev=accomplice.peer_id, next=None, root=root,
              blocks=(10, 20))
    push = {"type": "push", "client": attacker.peer_id, "session": sid, "start": 0, "blocks": [0, 10],
            "hidden": tensor((1, 2, HIDDEN))}
    opening = frame({"type": "push_open", "v": 1})

    async def owner() -> tuple[RawSession, str]:
        s = RawSession(attacker.link, node.peer_id, root, sid, 16, blocks=[10, 20], grant=g.to_wire())
        return s, (await s.open())["type"]

    session, opened = attacker.run(owner())
    strangers = [attacker.send(node.peer_id, PUSH, [opening, frame(push)], frames=1).codes,
                 attacker.send(node.peer_id, PUSH, [opening, frame({**push, "session": "other"})], frames=1).codes]
    poison = frame({**push, "hidden": tensor((1, 2, HIDDEN), float("inf"))})
    refused = accomplice.send(node.peer_id, PUSH, [opening, poison], frames=1).codes
    after = attacker.run(session.step(0, 2))  # the session's next frame is this step's result, no error
    session.abort()
    assert opened == "opened" and refused == ["bad_tensor"]
    assert strangers == [["push_refused"], ["push_refused"]]
    assert after["type"] == "result"
    honest()


def test_a_push_cycle_crafted_by_grants_stops_at_the_first_backward_hop(attacker, nodes, root, honest):
    """The attacker's grants make 0:10 push to 10:20 and 10:20 push back to 0:10, then it sends one
    pushed step: before, the two nodes recomputed it for each other forever (one 128-token step made
    35 steps in 115 s and never stopped). Now 0:10 refuses the backward push (`push_refused`, told
    to the session's client as `push_failed`) and each node computes the step exactly once."""
    a, b, sid, me = nodes[0, 10], nodes[10, 20], fresh_session(), attacker.link.identity
    ga = grant(me, session=sid, node=a.peer_id, prev=b.peer_id, next=b.peer_id, root=root, blocks=(0, 10))
    gb = grant(me, session=sid, node=b.peer_id, prev=a.peer_id, next=a.peer_id, root=root, blocks=(10, 20))
    before = {n.blocks: _computed_tokens(n) for n in (a, b)}

    async def cycle() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        sa = RawSession(attacker.link, a.peer_id, root, sid, 64, blocks=[0, 10], grant=ga.to_wire(),
                        next_maddrs=list(b.maddrs))
        sb = RawSession(attacker.link, b.peer_id, root, sid, 64, blocks=[10, 20], grant=gb.to_wire(),
                        next_maddrs=list(a.maddrs))
        try:
            assert (await sa.open())["type"] == (await sb.open())["type"] == "opened"
            first = await sa.send({"type": "step", "session": sid, "step": 0, "start": 0, "push": True,
                                   "hidden": wire.encode_tensor(torch.randn(1, 8, HIDDEN))})
            return first, [await sb.read(), await sb.read()]  # its result, then the refusal it met
        finally:
            sa.abort()
            sb.abort()

    first, second = attacker.run(cycle())
    assert first["type"] == "result" and first.get("pushed") is True
    assert [f["type"] for f in second] == ["result", "push_failed"] and second[1]["code"] == "push_refused"
    assert {n.blocks: _computed_tokens(n) - before[n.blocks] for n in (a, b)} == {(0, 10): 8, (10, 20): 8}
    honest()


def test_a_replayed_or_grown_push_is_refused_and_only_the_ticketed_step_is_computed(attacker, accomplice, nodes,
                                                                                     root, honest):
    """The attacker's grant names its accomplice as 10:20's predecessor, and it signs one step
    ticket (8 positions from 0). The accomplice pushes that step 300 times on one stream: a grant
    alone let each push rewind and recompute (one signature, any number of steps). Now 10:20
    computes the ticketed 8 positions once and answers every replay `push_refused`, as it does the
    ticket on a 64-token push and, once the session has spent a ticket, a push without one. 300
    more replays run while an honest client generates."""
    node, sid, me = nodes[10, 20], fresh_session(), attacker.link.identity
    g = grant(me, session=sid, node=node.peer_id, prev=accomplice.peer_id, next=None, root=root, blocks=(10, 20))
    push = {"type": "push", "client": attacker.peer_id, "session": sid, "start": 0, "blocks": [0, 10],
            "hidden": tensor((1, 8, HIDDEN)),
            "ticket": ticket(me, session=sid, start=0, tokens=8, batch=1).to_wire()}
    opening, replays = frame({"type": "push_open", "v": 1}), 300
    replayed = opening + frame(push) * replays  # one write: the harness stops writing at the first refusal
    baseline = honest()
    before = _computed_tokens(node)
    session = RawSession(attacker.link, node.peer_id, root, sid, 64, blocks=[10, 20], grant=g.to_wire())
    assert attacker.run(session.open())["type"] == "opened"
    flooded = accomplice.send(node.peer_id, PUSH, [replayed], frames=replays - 1).codes
    result = attacker.run(session.read())
    others = accomplice.send(node.peer_id, PUSH, [opening, frame({**push, "hidden": tensor((1, 64, HIDDEN))}),
                                                  frame({k: v for k, v in push.items() if k != "ticket"})], frames=2)
    computed = _computed_tokens(node) - before
    flood = accomplice.start(accomplice.exchange(node.peer_id, PUSH, [replayed], frames=replays))
    attacked = honest()
    again = flood.result(timeout=300)[0].codes
    session.abort()
    print(f"honest client, connect + {TOKENS} tokens: {baseline:.1f} s alone, {attacked:.1f} s during "
          f"{replays} replayed pushes")
    assert result["type"] == "result" and computed == 8
    assert Counter(flooded) == {"push_refused": replays - 1} and Counter(again) == {"push_refused": replays}
    assert others.codes == ["push_refused", "push_refused"]


def test_empty_sessions_are_counted_not_logged_one_entry_each(attacker, nodes, root, honest):
    """Opening and closing sessions that compute nothing appended a ~1.2 KB signed entry each (8,746
    in 30 s from one identity). Now they only count in a metric; a session that computed is logged."""
    node = nodes[20, 30]
    before, empty_before = len(serve_entries(node, wait=0)), metrics(node).get("swarmlm_sessions_empty_total", 0.0)

    async def session(sid: str, steps: int) -> None:
        s = RawSession(attacker.link, node.peer_id, root, sid, 16, blocks=[20, 30])
        assert (await s.open())["type"] == "opened"
        for i in range(steps):
            assert (await s.step(i, 1))["type"] == "result"
        assert (await s.close())["type"] == "closed"

    for _ in range(20):
        attacker.run(session(fresh_session(), 0))
    worked = fresh_session()
    attacker.run(session(worked, 2))
    after = serve_entries(node, session=worked)  # waits for the writer thread to commit it
    assert [e.session for e in after[before:] if e.client == attacker.peer_id] == [worked]
    assert metrics(node)["swarmlm_sessions_empty_total"] - empty_before == 20
    honest()
