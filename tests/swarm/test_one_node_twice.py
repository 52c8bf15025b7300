"""A node holds one session per client session: a chain must not pass through it twice.

A whole-model node slower per block than a node serving part of the model is left mid-span for the fast
one, and both sweeps could then board it again after (slow, fast, slow): its second open replaced its
first session, each replaced span failed, and the client banned the honest node again and again
(routing/planner.py `once_each` merges such a node's hops). The same collision came from failover: with
the slow node serving [0, 15) and the fast one [15, 30), the fast one's death re-planned [15, 30) onto
the slow node, already in the chain; now the piece keeps off the chain's other nodes, and where only they
serve it the whole chain is planned anew (routing/chain.py `_reopen`)."""

from __future__ import annotations

import logging
import signal

import pytest

from node.local_swarm import LocalSwarm
from swarmlm.sdk import RemoteModel

PROMPT = "What is the capital of France?"
TOKENS = 16
SLOW, FAST = ["--throughput", "1"], ["--throughput", "1000"]

pytestmark = pytest.mark.swarm


@pytest.fixture(scope="module")
def whole(default_store, tmp_path_factory):
    """One slow node serving every block; each test adds a fast one over part of the model."""
    with LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("twice")) as swarm:
        swarm.start_spans([])
        swarm.spawn_node((0, 30), extra=SLOW)
        yield swarm


@pytest.fixture(scope="module")
def local_ids(local_model):
    return local_model.generate(PROMPT, TOKENS).token_ids


def _blocks(g) -> list[tuple[str, list[int]]]:  # noqa: ANN001
    return [(hop["peer_id"], hop["blocks"]) for hop in g.extra["chain"]]


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "relayed"])
def test_a_fast_node_inside_a_slow_nodes_span_is_not_worth_visiting_the_slow_one_twice(
        whole, default_store, local_ids, push, caplog):
    fast = whole.spawn_node((10, 20), extra=FAST)
    try:
        slow = whole.nodes[0].peer_id
        with RemoteModel.connect(whole.initial_peers, default_store.path, push=push) as model, \
                caplog.at_level(logging.WARNING, "routing.chain"):
            g = model.generate(PROMPT, TOKENS)
            assert model.view.bans.failures(slow) == 0
        assert g.token_ids == local_ids
        assert _blocks(g) == [(slow, [0, 30])] and g.extra["failovers"] == 0
        assert "session_expired" not in caplog.text
    finally:
        whole.kill(fast, signal.SIGTERM)


def test_a_failed_piece_only_the_chains_other_node_serves_reopens_the_whole_chain(whole, default_store, local_ids,
                                                                                  caplog):
    fast = whole.spawn_node((15, 30), extra=FAST)
    slow = whole.nodes[0].peer_id
    ids: list[int] = []
    with RemoteModel.connect(whole.initial_peers, default_store.path) as model, \
            caplog.at_level(logging.WARNING, "routing.chain"):
        with model.inference_session(max_length=128) as session:
            for event in session.stream(PROMPT, TOKENS):
                ids.append(event.token_id)
                if len(ids) == 1:
                    assert [(s.peer, s.hop.start, s.hop.end) for s in session.runner.spans] == [
                        (slow, 0, 15), (fast.peer_id, 15, 30)]
                    whole.kill(fast)
            spans = [(s.peer, s.hop.start, s.hop.end) for s in session.runner.spans]
            failovers = session.runner.failovers
        assert model.view.bans.failures(slow) == 0
    assert ids == local_ids
    assert spans == [(slow, 0, 30)] and failovers == 1
    assert "session_expired" not in caplog.text
