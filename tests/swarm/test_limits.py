"""Limits that protect a node: cache pool, idle expiry, per-step and per-session tokens (real processes);
and a pool grown beyond `--cache-tokens` by `--grow-cache`.

Paged-cache accounting and per-client limits have their own tests in test_batching.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from node.config import parse_size
from node.local_swarm import LocalSwarm
from node.selection import cache_tokens_for_budget
from node.throughput import batch_size
from routing import wire
from routing.client import SwarmClient
from routing.errors import RemoteError
from shards.memory import block_bytes, kv_bytes_per_token
from swarmlm.sdk import RemoteModel

from ..waiting import until
from .raw import RawSession, info
from .test_metrics_scrape import _scrape

PROMPT = "What is the capital of France?"
LONG_PROMPT = ("France, in western Europe, has many large cities: Marseille, Lyon, Toulouse, Nice, Nantes, "
               "Strasbourg, Montpellier, Bordeaux and Lille among them. " + PROMPT)  # over 48 tokens
LIMITED = ["--cache-tokens", "96", "--page-tokens", "16", "--peer-cache-tokens", "96", "--session-timeout", "2",
           "--max-step-tokens", "16", "--max-session-length", "128",
           "--throughput", "1000"]  # announced as fast: clients try it first
# Node B's pool: 128 tokens configured, grown to what 480 MiB holds beside its 30 blocks (405 MiB): 1,703.
GROWN = ["--grow-cache", "--cache-tokens", "128", "--max-memory", "480MiB", "--metrics-port", "0"]


@pytest.fixture(scope="module")
def limited(default_store, tmp_path_factory):
    """Node A serves every block with tight limits; node B too, with the defaults but a grown cache pool."""
    swarm = LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("limits"), announce_period=2.0)
    with swarm:
        swarm.start(0, 30)
        starting = [swarm.spawn_node((0, 30), extra=LIMITED, wait=False),
                    swarm.spawn_node((0, 30), extra=GROWN, wait=False)]
        a, b = swarm.await_nodes(starting)
        yield swarm, a, b


def _session(client, peer, root, session, max_length, *steps):
    """Open a session and run (start, n_tokens, pause_before) steps; returns reply types/codes."""
    async def go():
        reader, writer = await client.open_stream(peer, "swarmlm.inference")
        out = []
        try:
            await wire.write_frame(writer, {"type": "open", "v": 1, "root": root, "session": session,
                                            "max_length": max_length})
            frame = await wire.read_frame(reader)
            out.append(frame)
            if frame["type"] == "error":
                return out
            for start, n, pause in steps:
                await __import__("asyncio").sleep(pause)
                await wire.write_frame(writer, {"type": "step", "session": session, "step": 0, "start": start,
                                                "hidden": wire.encode_tensor(torch.randn(1, n, 576))})
                out.append(await wire.read_frame(reader))
            return out
        finally:
            writer.close()

    return client.run(go(), timeout=120)


@pytest.fixture(scope="module")
def model(limited, default_store):
    swarm, *_ = limited
    with RemoteModel.connect(swarm.initial_peers, default_store.path) as m:
        yield m


def test_a_client_refused_for_cache_full_uses_another_node(limited, model, local_model):
    """Another client holds half of A's 96-token pool, its fair share; our prompt needs more than
    the other half. The client plans around A, which announces too little free cache for a 120-token
    session (routing/planner.py `has_room`), or, planned through A on an older record, gets cache_full
    there and fails over once: either way B serves."""
    swarm, a, b = limited
    hog = SwarmClient(swarm.initial_peers)
    hog.remember(a.peer_id, a.maddrs)
    try:
        holding = RawSession(hog, a.peer_id, model.root, "hog", 128)
        hog.run(holding.open(), timeout=60)
        for start in range(0, 48, 16):
            assert hog.run(holding.step(start, 16), timeout=60)["type"] == "result"
        with model.inference_session(max_length=120) as s:
            g = s.generate(LONG_PROMPT, 16)
            served_by = {span.peer for span in s.runner.spans}
            failovers = s.runner.failovers
        holding.abort()
    finally:
        hog.close()
    assert served_by == {b.peer_id} and failovers <= 1
    assert g.token_ids == local_model.generate(LONG_PROMPT, 16).token_ids


def test_a_grown_pool_is_announced_and_serves_a_session_longer_than_the_configured_one(limited, model,
                                                                                     default_store, local_model):
    """B's pool is what its budget holds beside its blocks (node/memory.py), in pages of 64: its record,
    `info` and metrics count it, and a session of more than its configured 128 tokens runs there exactly."""
    _, a, b = limited
    m = default_store.manifest
    grown = cache_tokens_for_budget(parse_size("480MiB"), block_bytes(m, torch.float32),
                                    kv_bytes_per_token(m.config, torch.float32), 30, least=128)
    pool = -(-grown // 64) * 64
    assert grown > 1000
    load = model.client.run(info(model.client, b.peer_id), timeout=60)["load"]
    assert load["cache_tokens_used"] + load["cache_tokens_free"] == pool
    metrics = _scrape(re.search(r"^metrics (\S+)$", Path(b.log).read_text(), re.M).group(1))
    assert metrics["swarmlm_cache_tokens_used[]"] + metrics["swarmlm_cache_tokens_free[]"] == pool
    record = until(lambda: model.client.run(model.client.records(model.root, 30), timeout=60)[b.peer_id],
                   lambda r: r.cache_tokens_left == pool, timeout=30, interval=0.5)  # once B's earlier sessions ended
    # B measured its speed (no --throughput): one session's, and a batch's as big as its pool and
    # --max-batch-tokens (default 512) allow, which clients price it by (routing/planner.py batch_step)
    assert record.batch_size == batch_size(512, pool) > 1 and record.batch_throughput > 0

    with model.inference_session(max_length=256) as s:  # A's 96 tokens have no room: the planner picks B
        g = s.generate(LONG_PROMPT, 64, ignore_eos=True)  # after its 81 prompt tokens
        [span] = s.runner.spans
    assert span.peer == b.peer_id and span.tokens > 128
    assert g.token_ids == local_model.generate(LONG_PROMPT, 64, ignore_eos=True).token_ids


def test_per_step_and_per_session_token_limits(limited, model):
    _, a, _ = limited
    [_, too_many] = _session(model.client, a.peer_id, model.root, "step", 64, (0, 17, 0))
    assert too_many["code"] == "too_large" and "tokens per step <= 16" in too_many["message"]
    [too_long] = _session(model.client, a.peer_id, model.root, "long", 129)
    assert too_long["code"] == "max_length" and "128" in too_long["message"]


def test_idle_sessions_expire_and_the_client_is_told_at_once(limited, model):
    _, a, _ = limited

    async def go():
        s = RawSession(model.client, a.peer_id, model.root, "idle", 32)
        replies = [await s.open(), await s.step(0, 4)]
        replies.append(await s.read(timeout=15))  # 2 s timeout, checked every 5 s: told without asking
        s.abort()
        return replies

    opened, first, told = model.client.run(go(), timeout=60)
    assert (opened["type"], first["type"]) == ("opened", "result")
    assert told["code"] == "session_expired" and "idle" in told["message"]


def test_the_sdk_chunks_prompts_and_survives_an_expired_session(limited, default_store, local_model):
    """Only A serves (B banned): prompts go in 16-token steps; an idle session is reopened and replayed."""
    swarm, a, b = limited
    with RemoteModel.connect(swarm.initial_peers, default_store.path) as m:
        m.view.bans.ban(b.peer_id)
        m.view.bans._until[b.peer_id] = time.monotonic() + 3600
        with m.inference_session(max_length=96) as chat:
            first = chat.generate(PROMPT, 8)
            _wait_until_idle_sessions_expired(m.client, a)  # A's 2 s session timeout, checked every 5 s
            conversation = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": first.text},
                            {"role": "user", "content": "And of Germany?"}]
            second = chat.generate(conversation, 8)
            assert chat.runner.failovers == 1 and {s.peer for s in chat.runner.spans} == {a.peer_id}
    assert second.token_ids == local_model.generate(conversation, 8).token_ids


def _wait_until_idle_sessions_expired(client, node, deadline_s: float = 30.0) -> None:
    until(lambda: client.run(info(client, node.peer_id), timeout=60)["load"]["sessions"], lambda live: not live,
          timeout=deadline_s, interval=0.5)


def test_remote_errors_carry_the_node_message(limited, model):
    _, a, _ = limited
    err = RemoteError(a.peer_id, "cache_full", "cache full: …")
    assert "cache_full" in str(err) and a.peer_id[-8:] in str(err)
