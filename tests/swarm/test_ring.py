"""Ring mode through real nodes (issue 25): the last node samples, the first embeds, the client checks.

One swarm for the module: three `--ring` nodes over the model's 30 blocks, a node that samples
dishonestly on the last span (wrong tokens, or wrong drafts kept), which the client is made to route
through once, and a spare for each node that fails mid-ring (killed, or stopped to stall the ring).
Speculation in the ring runs on REPEAT, where prompt lookup's drafts are mostly accepted."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from node.local_swarm import LocalSwarm
from routing import protocol, wire
from routing.client import SwarmClient
from routing.grants import ring_ticket
from swarmlm.sdk import RemoteModel
from swarmlm.swarm_status import swarm_report

from ..conftest import FIXED_THROUGHPUT
from ..shards.test_speculative_generation import REPEAT

PROMPT = "What is the capital of France?"
SPANS = [(0, 10), (10, 20), (20, 30)]
LIAR = [sys.executable, str(Path(__file__).with_name("lying_sampler_node.py"))]


@pytest.fixture(scope="module")
def ring_swarm(default_store, tmp_path_factory):
    swarm = LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("ring"), announce_period=5.0,
                       node_args=["--ring", *FIXED_THROUGHPUT])
    with swarm:
        swarm.start_spans(SPANS)
        yield swarm


@pytest.fixture(scope="module")
def local_greedy(local_model) -> list[int]:
    """Local greedy text for PROMPT; shorter answers are its prefixes."""
    return local_model.generate(PROMPT, 24, ignore_eos=True).token_ids


def _ring_model(swarm: LocalSwarm, store, **kwargs) -> RemoteModel:  # noqa: ANN001
    return RemoteModel.connect(swarm.initial_peers, store.path, ring=True, **kwargs)


def test_greedy_and_seeded_rings_equal_local_and_count_what_is_kept(ring_swarm, default_store, local_model,
                                                                     local_greedy):
    with _ring_model(ring_swarm, default_store) as model:
        report = swarm_report(model.view.records, default_store.manifest, set(model.view.records))
        assert report["totals"]["ring"] and all(node["ring"] for node in report["nodes"])  # what `swarm status` shows
        with model.inference_session(max_length=128) as s:
            greedy = s.generate(PROMPT, 24, ignore_eos=True)
            ring = s.runner.ring
            assert ring is not None and ring.restarts == 1 and ring.steps == 23 and not ring.convictions
            assert s.runner.relayed_steps == 0 and s.runner.failovers == 0
            # every position the ring computed is one the client kept: the receipts count exactly those
            kept = greedy.prompt_tokens + 23
            assert [(sp.tokens, sp.accepted) for sp in s.runner.spans] == [(kept, kept)] * len(SPANS)
            sampled = s.generate(PROMPT, 16, temperature=0.8, top_k=40, seed=7, ignore_eos=True)  # the next turn
            assert ring.restarts == 2 and not ring.convictions
            first = s.runner.spans[0].peer
            refusal = _stranger_ring_token(ring_swarm, first, model.client.peer_id, s.runner.session_id)
            assert refusal["code"] == "push_refused" and "predecessor" in refusal["message"]
    assert greedy.token_ids == local_greedy
    with local_model.inference_session(max_length=128) as local:
        local.generate(PROMPT, 24, ignore_eos=True)
        expected = local.generate(PROMPT, 16, temperature=0.8, top_k=40, seed=7, ignore_eos=True)
    assert sampled.token_ids == expected.token_ids


def _stranger_ring_token(swarm: LocalSwarm, first: str, client: str, session: str) -> dict:
    """What the first node answers a stranger sending a ring token into a client's live session."""
    stranger = SwarmClient(swarm.initial_peers)
    node = next(n for n in swarm.nodes if n.peer_id == first)
    stranger.remember(node.peer_id, node.maddrs)

    async def go() -> dict:
        reader, writer = await stranger.open_stream(first, protocol.PUSH)
        try:
            await wire.write_frame(writer, protocol.PushOpen().to_wire())
            forged = ring_ticket(stranger.identity, session=session, start=60, tokens=4).to_wire()
            await wire.write_frame(writer, protocol.RingToken(client, session, 60, 42, (20, 30), forged).to_wire())
            return await asyncio.wait_for(wire.read_frame(reader), 30)
        finally:
            writer.close()

    try:
        return stranger.run(go())
    finally:
        stranger.close()


def test_speculation_in_the_ring_keeps_local_greedy_text_and_counts_only_kept_tokens(ring_swarm, default_store,
                                                                                    local_repeat):
    """The sampler drafts by prompt lookup and judges its drafts; the client takes each ring step as its
    own speculative trip: the text is local greedy text, and rejected drafts are rolled back on every node.
    The second answer, in a new session, drafts from what the sampler learned in the first."""
    with _ring_model(ring_swarm, default_store) as model:
        for _ in range(2):
            with model.inference_session(max_length=256) as s:
                g = s.generate(REPEAT, 24, ignore_eos=True, speculative=4)
                ring, kept = s.runner.ring, len(s.history)
                assert ring is not None and ring.restarts == 1 and not ring.convictions
                assert s.runner.relayed_steps == 0 and s.runner.failovers == 0
                spec = g.extra["speculation"]
                assert spec["accepted"] > 0 and ring.steps == spec["trips"] - 1  # every trip after the prompt
                assert all(sp.accepted == kept and sp.tokens - sp.rolled_back == kept for sp in s.runner.spans)
            assert g.token_ids == local_repeat
            assert [(sp.closed.tokens, sp.closed.accepted_tokens) if sp.closed else None
                    for sp in s.runner.closed_spans] == [(sp.tokens, kept) for sp in s.runner.closed_spans]


@pytest.fixture(scope="module")
def local_repeat(local_model) -> list[int]:
    return local_model.generate(REPEAT, 24, ignore_eos=True).token_ids


@pytest.mark.parametrize("lie, prompt, speculative", [
    pytest.param("", PROMPT, 0, id="wrong-token"),
    pytest.param("keeps-drafts", REPEAT, 4, id="keeps-rejected-drafts")])
def test_a_lying_sampler_is_convicted_rolled_back_and_the_text_stays_local(ring_swarm, default_store, local_greedy,
                                                                           local_repeat, lie, prompt, speculative):
    honest = next(n for n in ring_swarm.nodes if n.blocks == SPANS[-1])
    ring_swarm.env["SWARMLM_TEST_RING_LIE"] = lie
    try:
        liar = ring_swarm.spawn_node(SPANS[-1], program=LIAR)
    finally:
        del ring_swarm.env["SWARMLM_TEST_RING_LIE"]
    try:
        with _ring_model(ring_swarm, default_store) as model:
            model.view.bans.ban(honest.peer_id)  # a few seconds: the first chain goes through the liar
            with model.inference_session(max_length=256) as s:
                g = s.generate(prompt, 12, ignore_eos=True, speculative=speculative)
                ring = s.runner.ring
                assert ring is not None
                assert [e.peer for e in ring.convictions] == [liar.peer_id]
                assert s.runner.spans[-1].peer == honest.peer_id
                assert ring.restarts >= 2 and ring.steps > 0  # the ring closed again, through the honest node
        # the nodes count what the receipts name: every stale ring step the liar set off included
        spans = s.runner.closed_spans
        assert [(sp.closed.tokens, sp.closed.accepted_tokens) if sp.closed else None for sp in spans] == \
            [(sp.tokens, sp.accepted) for sp in spans]
    finally:
        ring_swarm.kill(liar)
    assert g.token_ids == (local_repeat if speculative else local_greedy)[:12]


@pytest.mark.parametrize("span, sig", [
    pytest.param(0, signal.SIGKILL, id="embedder"), pytest.param(1, signal.SIGKILL, id="middle"),
    pytest.param(2, signal.SIGKILL, id="sampler"), pytest.param(1, signal.SIGSTOP, id="stalled-middle"),
    # silence at the ring's turn: relayed first to find the silent node (`make long`)
    pytest.param(2, signal.SIGSTOP, id="stalled-sampler", marks=pytest.mark.long)])
def test_a_node_dying_or_stalling_mid_ring_ends_in_the_same_text(ring_swarm, default_store, local_greedy, caplog,
                                                                  span, sig):
    """The embedder (first block), a middle node or the sampler (last block) killed once the ring runs, or a
    node stopped: the client fails over to a spare; a stopped node within the ring's silence limit, well
    before the request timeout (routing/ring.py)."""
    ring_swarm.spawn_node(SPANS[span])  # a spare for the failing node's blocks
    stopped = None
    try:
        with _ring_model(ring_swarm, default_store) as model, caplog.at_level(logging.INFO, "routing.chain"):
            with model.inference_session(max_length=128) as s:
                tokens = []
                for event in s.stream(PROMPT, 24, ignore_eos=True):
                    # the ring is running: one of its nodes goes away. Early: the ring runs ahead of a slow
                    # client, and at CI load it had sampled all 16 tokens of a shorter answer by the 4th
                    if len(tokens) == 2:
                        failing = s.runner.spans[span].peer
                        node = next(n for n in ring_swarm.nodes if n.peer_id == failing)
                        if sig == signal.SIGSTOP:
                            stopped = node
                            os.killpg(node.process.pid, sig)  # its sockets stay open; nothing is read or answered
                        else:
                            ring_swarm.kill(node, sig)
                    if event.token_id is not None:
                        tokens.append(event.token_id)
                assert s.runner.failovers >= 1 and s.runner.ring is not None and not s.runner.ring.convictions
                assert failing not in [sp.peer for sp in s.runner.spans]
                assert s.runner.ring.steps > 4  # the ring closed again, through the spare
        if stopped is not None:
            silences = [float(m) for r in caplog.records if failing[-8:] in r.getMessage()
                        for m in re.findall(r"no reply within (\d+)s", r.getMessage())]
            assert silences and max(silences) < model.client.request_timeout
    finally:
        if stopped is not None:
            ring_swarm.kill(stopped)
    assert tokens == local_greedy[:24]
