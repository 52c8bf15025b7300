"""A node serving every block closes a ring alone (issue 24): it samples each token and sends it to
itself, so a token costs its own step and no round trip to the client, who still checks every one.

One node over the model's 30 blocks for the module; a dishonest sampler and a spare for a node killed
mid-ring (its blocks chosen by `--blocks auto`) are started where a test needs them. Every node runs
`--ring auto`, so each holds the head because it serves every block (tests/node/test_ring_auto.py). Each test counts the ring's steps: a chain
that quietly fell back to the client's relaying would still produce local text."""

from __future__ import annotations

import logging

import pytest

from node.local_swarm import LocalSwarm
from swarmlm.sdk import RemoteModel

from ..api.conftest import MODEL
from ..api.gateway_process import run_gateway
from ..api.test_openai_client import QUESTION
from ..conftest import FIXED_THROUGHPUT
from ..shards.test_speculative_generation import REPEAT
from .test_ring import LIAR, PROMPT

WHOLE = (0, 30)


@pytest.fixture(scope="module")
def alone(default_store, tmp_path_factory):
    swarm = LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("ring-alone"), announce_period=5.0,
                       node_args=["--ring", "auto", *FIXED_THROUGHPUT])
    with swarm:
        swarm.start_spans([WHOLE])
        yield swarm


def _model(swarm: LocalSwarm, store) -> RemoteModel:  # noqa: ANN001
    """A client as the SDK makes it: ringing where the chain can (the default)."""
    return RemoteModel.connect(swarm.initial_peers, store.path)


def test_a_whole_model_node_rings_alone_and_greedy_seeded_and_speculative_text_equal_local(alone, default_store,
                                                                                          local_model):
    with _model(alone, default_store) as model:
        with model.inference_session(max_length=256) as s:
            greedy = s.generate(PROMPT, 24, ignore_eos=True)
            ring = s.runner.ring
            assert ring is not None and ring.restarts == 1 and ring.steps == 23 and not ring.convictions
            assert len(s.runner.spans) == 1 and s.runner.relayed_steps == 0 and s.runner.failovers == 0
            kept = greedy.prompt_tokens + 23  # the ring computed only positions the client kept
            assert [(sp.tokens, sp.accepted) for sp in s.runner.spans] == [(kept, kept)]
            sampled = s.generate(PROMPT, 16, temperature=0.8, top_k=40, seed=7, ignore_eos=True)  # the next turn
            assert ring.restarts == 2 and ring.steps == 23 + 15 and not ring.convictions
        with model.inference_session(max_length=256) as s:
            spec = s.generate(REPEAT, 24, ignore_eos=True, speculative=4)
            ring = s.runner.ring
            assert ring is not None and ring.restarts == 1 and not ring.convictions
            assert spec.extra["speculation"]["accepted"] > 0 and ring.steps == spec.extra["speculation"]["trips"] - 1
    with local_model.inference_session(max_length=256) as local:
        assert greedy.token_ids == local.generate(PROMPT, 24, ignore_eos=True).token_ids
        expected = local.generate(PROMPT, 16, temperature=0.8, top_k=40, seed=7, ignore_eos=True)
    assert sampled.token_ids == expected.token_ids
    assert spec.token_ids == local_model.generate(REPEAT, 24, ignore_eos=True).token_ids


def test_the_gateway_rings_with_a_node_alone_and_answers_as_local(alone, local_model, tmp_path):
    """Applications behind the OpenAI gateway get rings too (its default; `--no-ring` turns them off), and
    its provenance counts the ring's steps (the answer stops at EOS, which the ring's sampler stops at too)."""
    import openai

    with run_gateway(alone.initial_peers, tmp_path / "gateway") as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=300)
        completion = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    local = local_model.generate(QUESTION, 24)
    assert completion.choices[0].message.content == local.text == "The capital of France is Paris."
    assert completion.model_extra["swarmlm"]["ring_steps"] > 0


def test_a_node_lying_alone_is_convicted_and_a_killed_one_replaced_and_the_text_stays_local(
        alone, default_store, local_model, caplog):
    """The client is made to start on a node that samples the least likely token: convicted at its first
    ring token, the ring closes again on the honest node. Then the node ringing alone is killed mid-answer:
    the client fails over to a spare, which rings alone in its turn."""
    honest = alone.nodes[0]
    liar = alone.spawn_node(WHOLE, program=LIAR)
    try:
        with _model(alone, default_store) as model:
            model.view.bans.ban(honest.peer_id)  # a few seconds: the first chain is the liar alone
            with model.inference_session(max_length=128) as s:
                lied = s.generate(PROMPT, 12, ignore_eos=True)
                ring = s.runner.ring
                assert ring is not None and [e.peer for e in ring.convictions] == [liar.peer_id]
                assert [sp.peer for sp in s.runner.spans] == [honest.peer_id]
                assert ring.restarts >= 2 and ring.steps > 0  # the ring closed again, on the honest node alone
    finally:
        alone.kill(liar)
    spare = alone.spawn_node()  # --blocks auto: every block fits this machine's memory beside the head
    with _model(alone, default_store) as model, caplog.at_level(logging.INFO, "routing.chain"):
        model.view.bans.ban(spare.peer_id)  # the answer starts on the node killed below
        with model.inference_session(max_length=128) as s:
            tokens = []
            for event in s.stream(PROMPT, 24, ignore_eos=True):
                if len(tokens) == 2:
                    assert [sp.peer for sp in s.runner.spans] == [honest.peer_id]
                    alone.kill(honest)
                if event.token_id is not None:
                    tokens.append(event.token_id)
            ring = s.runner.ring
            assert s.runner.failovers >= 1 and ring is not None and not ring.convictions
            assert [(sp.peer, sp.hop.start, sp.hop.end) for sp in s.runner.spans] == [(spare.peer_id, *WHOLE)]
            assert ring.steps > 4
    local = local_model.generate(PROMPT, 24, ignore_eos=True).token_ids
    assert lied.token_ids == local[:12] and tokens == local
