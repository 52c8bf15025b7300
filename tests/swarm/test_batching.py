"""Many clients at once (real processes): batched steps give every session exactly its own answer,
cache pages are taken and given back exactly, and per-client limits refuse only the greedy client."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from node.local_swarm import LocalSwarm
from routing.client import SwarmClient
from swarmlm.sdk import RemoteModel

from ..waiting import until
from .raw import RawSession, info, output

# Answers of different lengths, so sessions leave the batch at different steps; short, since each
# token costs eight sessions' steps on two CI cores.
CASES = [("What is the capital of France?", 6), ("Name three primary colours.", 10),
         ("Write a haiku about the sea.", 12), ("How many legs does a spider have?", 4),
         ("Give me a synonym for happy.", 8), ("What is 12 times 7?", 5),
         ("List four fruits.", 9), ("Explain rain in one sentence.", 11)]


def test_eight_concurrent_clients_each_get_their_local_greedy_output(swarm3, default_store, local_model):
    expected = [local_model.generate(p, n).token_ids for p, n in CASES]
    models = [RemoteModel.connect(swarm3.initial_peers, default_store.path) for _ in range(2)]  # two client peers
    got: dict[int, list[int]] = {}
    try:
        def run(i: int) -> None:
            prompt, n = CASES[i]
            got[i] = models[i % 2].generate(prompt, n).token_ids

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(CASES))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert [got.get(i) for i in range(len(CASES))] == expected
        infos = [models[0].client.run(info(models[0].client, n.peer_id)) for n in swarm3.nodes]
    finally:
        for m in models:
            m.close()
    assert max(i["scheduler"]["largest_batch"] for i in infos) >= 2  # steps of different sessions shared forwards
    assert all(i["load"]["cache_tokens_used"] == 0 for i in infos)  # every page came back


@pytest.fixture(scope="module")
def small_node(default_store, tmp_path_factory):
    """One node over blocks 0:10 with a 256-token pool of 16-token pages and tight per-client limits."""
    swarm = LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("pages"), announce_period=2.0)
    with swarm:
        swarm.start(0, 30)
        node = swarm.spawn_node((0, 10), extra=["--cache-tokens", "256", "--page-tokens", "16",
                                                "--peer-max-sessions", "2", "--peer-cache-tokens", "192",
                                                "--evict-idle-after", "3"])
        clients = [SwarmClient(swarm.initial_peers) for _ in range(2)]
        for c in clients:
            c.remember(node.peer_id, node.maddrs)
        try:
            yield node, clients
        finally:
            for c in clients:
                c.close()


def _run(client, coro):
    return client.run(coro, timeout=120)


async def _holding(client, node, root: str, session: str, tokens: int) -> RawSession:
    """An open session whose first step filled `tokens` positions."""
    s = RawSession(client, node.peer_id, root, session, 256)
    await s.open()
    assert (await s.step(0, tokens))["type"] == "result"
    return s


def _wait_until_empty(client, node) -> None:
    """Sessions of earlier tests end when the node sees their streams close; wait for their pages."""
    until(lambda: _run(client, info(client, node.peer_id))["load"]["cache_tokens_used"], lambda used: not used,
          timeout=20)


def test_pages_follow_the_session_grow_rewind_and_close(small_node, default_store):
    node, (client, _) = small_node
    root = default_store.root

    async def go():
        s = RawSession(client, node.peer_id, root, "grow", 256)
        assert (await s.open())["type"] == "opened"
        assert (await s.step(0, 40))["type"] == "result"  # 40 positions: 3 pages
        used = [(await info(client, node.peer_id))["load"]["cache_tokens_used"]]
        assert (await s.step(10, 1))["type"] == "result"  # rewind to 11 positions: 1 page
        used.append((await info(client, node.peer_id))["load"]["cache_tokens_used"])
        assert (await s.close())["type"] == "closed"
        used.append((await info(client, node.peer_id))["load"]["cache_tokens_used"])
        return used

    assert _run(client, go()) == [48, 16, 0]


def test_a_rewound_step_computes_what_a_fresh_one_would(small_node, default_store, local_model):
    node, (client, _) = small_node
    x = torch.randn(1, 20, 576)

    async def go():
        s = RawSession(client, node.peer_id, default_store.root, "rewind", 64)
        await s.open()
        await s.step(0, 20, x)
        await s.step(20, 5)  # drafts that will be rejected
        again = output(await s.step(12, 8, x[:, 12:]), 8)
        await s.close()
        return again

    with torch.inference_mode():
        expected = local_model.stack.narrow(0, 10)(x)[:, 12:]
    assert float((_run(client, go()) - expected).norm() / expected.norm()) < 1e-5


def test_a_client_over_its_limits_is_refused_while_another_is_served(small_node, default_store):
    node, (greedy, other) = small_node
    root = default_store.root

    async def hog():
        sessions = [RawSession(greedy, node.peer_id, root, f"hog-{i}", 256) for i in range(3)]
        replies = [await s.open() for s in sessions]
        too_much = await sessions[0].step(0, 200)  # 13 pages: over its 192-token (12-page) share
        within = await sessions[0].step(0, 100)  # the refusal left the session usable
        for s in sessions:
            s.abort()
        return replies, too_much, within

    async def polite():
        s = RawSession(other, node.peer_id, root, "polite", 64)
        replies = [await s.open(), await s.step(0, 30)]
        await s.close()
        return replies

    opened, too_much, within = _run(greedy, hog())
    assert [r.get("code", r["type"]) for r in opened] == ["opened", "opened", "peer_limit"]
    assert "limit 2" in opened[2]["message"]
    assert too_much["code"] == "peer_limit" and "limit 12" in too_much["message"]
    assert within["type"] == "result"
    assert [r["type"] for r in _run(other, polite())] == ["opened", "result"]


def test_a_session_beyond_its_fair_share_gets_cache_full_and_an_idle_one_is_evicted(small_node, default_store):
    node, (a, b) = small_node
    root = default_store.root
    _wait_until_empty(a, node)


    async def second():
        s = RawSession(b, node.peer_id, root, "second", 256)
        await s.open()
        filled = await s.step(0, 128)  # the last 8 pages
        full = await s.step(128, 1)  # no page left, "first" was active a moment ago and holds no more than its half
        return s, filled, full

    sa = _run(a, _holding(a, node, root, "first", 120))  # 8 of 16 pages
    sb, filled, full = _run(b, second())
    assert filled["type"] == "result"
    assert full["code"] == "cache_full" and "cache full" in full["message"]
    assert _run(a, sa.step(120, 1))["type"] == "result"  # the other session goes on (within its pages)
    time.sleep(4)  # past --evict-idle-after: "first" is now idle, so its pages may go to "second"
    assert _run(b, sb.step(128, 1))["type"] == "result"
    told = _run(a, sa.read())
    assert told["code"] == "session_expired" and "idle" in told["message"]
    sb.abort()


def test_a_session_within_its_fair_share_takes_pages_from_the_largest_holder_above_its_own(small_node,
                                                                                          default_store):
    """Both sessions are active; "first" holds 10 of 16 pages, above the 8 each of two peers may
    claim, so "second", growing from 6 to 7, gets its page and "first" is ended, its client told."""
    node, (a, b) = small_node
    root = default_store.root
    _wait_until_empty(a, node)


    async def second():
        s = RawSession(b, node.peer_id, root, "small", 256)
        await s.open()
        return s, await s.step(0, 96), await s.step(96, 1)

    sa = _run(a, _holding(a, node, root, "large", 160))
    sb, filled, grown = _run(b, second())
    assert (filled["type"], grown["type"]) == ("result", "result")
    told = _run(a, sa.read())
    assert told["code"] == "cache_reclaimed" and "fair share of 8" in told["message"]
    sb.abort()
