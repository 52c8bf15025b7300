"""Speculative decoding through real node processes: greedy output is token for token the same as
without it, whoever drafts (prompt lookup, the target itself, random weights), pushed or relayed,
and when a node dies mid-generation (rejected drafts rewind the nodes' caches; a replacement
node is replayed only what was kept)."""

from __future__ import annotations

import signal

import pytest

from node.local_swarm import LocalSwarm, even_spans
from swarmlm.sdk import RemoteModel
from tests.conftest import FIXED_THROUGHPUT
from tests.shards.conftest import always_max_drafts  # noqa: F401  (fixtures shared with the local tests)
from tests.shards.test_speculative_generation import CAPITAL, REPEAT, random_drafter, self_drafter  # noqa: F401

TOKENS = 32
pytestmark = [pytest.mark.swarm, pytest.mark.usefixtures("always_max_drafts")]  # asserted counts need no timing


@pytest.fixture(scope="module")
def plain(remote_model):
    """Non-speculative greedy through the swarm, once per prompt."""
    return {prompt: remote_model.generate(prompt, TOKENS).token_ids for prompt in (REPEAT, CAPITAL)}


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "relayed"])
def test_prompt_lookup_through_the_swarm_gives_the_same_tokens(swarm3, default_store, plain, push):
    with RemoteModel.connect(swarm3.initial_peers, default_store.path, push=push) as model:
        g = model.generate(REPEAT, TOKENS, speculative=4)
    assert g.token_ids == plain[REPEAT]
    stats = g.extra["speculation"]
    assert stats["accepted"] > 0 and stats["trips"] < len(g.token_ids)
    assert g.extra["failovers"] == 0


def test_the_target_as_draft_through_the_swarm_keeps_every_draft(remote_model, plain, self_drafter):
    g = remote_model.generate(REPEAT, TOKENS, speculative=4, drafter=self_drafter)
    assert g.token_ids == plain[REPEAT]
    stats = g.extra["speculation"]
    assert stats["drafted"] > 0 and stats["accepted"] == stats["drafted"]


def test_a_random_draft_through_the_swarm_changes_nothing(remote_model, plain, random_drafter):
    g = remote_model.generate(CAPITAL, TOKENS, speculative=3, drafter=random_drafter)
    assert g.token_ids == plain[CAPITAL]
    stats = g.extra["speculation"]
    assert stats["drafted"] > 0 and stats["acceptance_rate"] < 0.2


@pytest.fixture(scope="module")
def spared(default_store, tmp_path_factory):
    """The 3-span split and two more holders of the middle blocks: each kill test below kills one of them,
    and a client of the next test pings the dead one and avoids it."""
    with LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("spared"), node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start_spans([*even_spans(default_store.manifest.num_blocks, 3), (10, 20), (10, 20)])
        yield swarm


@pytest.mark.parametrize("drafter", ["lookup", "random"])
def test_a_node_killed_mid_speculation_changes_no_token(spared, default_store, local_model, random_drafter, drafter):
    want = local_model.generate(REPEAT, TOKENS).token_ids
    options = {"speculative": 4, "drafter": random_drafter if drafter == "random" else None}
    ids: list[int] = []
    killed = False
    with RemoteModel.connect(spared.initial_peers, default_store.path) as model, \
            model.inference_session(max_length=256) as session:
        for event in session.stream(REPEAT, TOKENS, **options):
            if event.token_id is not None:
                ids.append(event.token_id)
            if len(ids) >= 6 and not killed:  # a trip may bring several tokens: not exactly at 6
                killed = True
                middle = next(s.peer for s in session.runner.spans if s.hop.start == 10)
                spared.kill(next(n for n in spared.nodes if n.peer_id == middle), signal.SIGKILL)
        failovers = session.runner.failovers
    assert ids == want
    assert failovers == 1
