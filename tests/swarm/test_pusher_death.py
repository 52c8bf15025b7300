"""A pusher that dies after its own result left, before its push did (real processes): the client relays
that step from the next node at once, and the next node, which never got the push, is not blamed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from node.local_swarm import LocalSwarm, even_spans
from swarmlm.sdk import RemoteModel
from tests.conftest import FIXED_THROUGHPUT

pytestmark = [pytest.mark.swarm, pytest.mark.model]
DYING = [sys.executable, str(Path(__file__).with_name("dying_pusher_node.py"))]
PROMPT = "What is the capital of France?"
TOKENS = 12


def test_the_step_is_relayed_from_the_next_node_which_is_not_blamed(default_store, tmp_path, local_model):
    first, second, third = even_spans(default_store.manifest.num_blocks, 3)
    with LocalSwarm(str(default_store.path), tmp_path, node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start_spans([second, third])
        dying = swarm.spawn_node(first, program=DYING)
        successor = next(n for n in swarm.nodes if n.blocks == second).peer_id
        # a client that waited for the lost push until its request timeout would then blame the successor
        with RemoteModel.connect(swarm.initial_peers, default_store.path, request_timeout=20) as model:
            with model.inference_session(max_length=64) as session:
                ids = []
                for event in session.stream(PROMPT, TOKENS, ignore_eos=True):
                    ids.append(event.token_id)
                    if len(ids) == 1:  # the spare joins after the chain was planned through `dying`
                        swarm.spawn_node(first)
                runner = session.runner
                relayed, failovers = runner.relayed_steps, runner.failovers
                chain = [s.peer for s in runner.spans]
            bans = model.view.bans
            blamed = {peer: bans.failures(peer) for peer in (successor, dying.peer_id)}
    assert ids == local_model.generate(PROMPT, TOKENS, ignore_eos=True).token_ids
    assert relayed >= 1 and failovers == 1, (relayed, failovers)  # the lost push relayed; only the dead replaced
    assert successor in chain and dying.peer_id not in chain
    assert blamed == {successor: 0, dying.peer_id: 1}
