"""Nodes vanish and clients do not notice: failover with replay, limits, drain, restart (real processes)."""

from __future__ import annotations

import signal

import pytest

from node.local_swarm import LocalSwarm, even_spans
from swarmlm.sdk import RemoteModel
from tests.conftest import FIXED_THROUGHPUT

PROMPT = "What is the capital of France?"
TOKENS = 24  # a kill lands within the first 8: most of the answer comes after the failover


@pytest.fixture(scope="module")
def reference_ids(local_model):
    return local_model.generate(PROMPT, TOKENS, ignore_eos=True).token_ids


def _generate_killing(model: RemoteModel, swarm: LocalSwarm, blocks_start: int, after: int) -> tuple[list[int], int]:
    """Greedy generation; after `after` tokens, SIGKILL the node serving `blocks_start` in our chain."""
    ids: list[int] = []
    with model.inference_session(max_length=128) as session:
        for event in session.stream(PROMPT, TOKENS, ignore_eos=True):
            if event.token_id is not None:
                ids.append(event.token_id)
            if len(ids) == after:
                victim_peer = next(s.peer for s in session.runner.spans if s.hop.start == blocks_start)
                swarm.kill(next(n for n in swarm.nodes if n.peer_id == victim_peer), signal.SIGKILL)
        failovers = session.runner.failovers
    return ids, failovers


def test_kill_9_mid_generation_the_client_finishes_with_identical_tokens(default_store, tmp_path, reference_ids):
    with LocalSwarm(str(default_store.path), tmp_path, node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start_spans([*even_spans(default_store.manifest.num_blocks, 3), (10, 20)])  # two hold the middle
        with RemoteModel.connect(swarm.initial_peers, default_store.path) as model:
            ids, failovers = _generate_killing(model, swarm, 10, after=5)
    assert failovers == 1
    assert ids == reference_ids


@pytest.mark.parametrize("generations", [2, pytest.param(5, marks=pytest.mark.long)])
def test_repeated_kills_over_generations_with_spare_nodes(default_store, tmp_path, reference_ids, generations):
    """Generation i kills a holder of span i % 3; a killed span gets a new spare if a later round needs one."""
    spans = even_spans(default_store.manifest.num_blocks, 3)
    with LocalSwarm(str(default_store.path), tmp_path, node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start_spans([*spans, *spans[:generations]])
        with RemoteModel.connect(swarm.initial_peers, default_store.path) as model:
            for i in range(generations):
                span = spans[i % 3]
                ids, failovers = _generate_killing(model, swarm, span[0], after=3 + i)
                assert (ids, failovers) == (reference_ids, 1), f"generation {i + 1}"
                if i + 3 < generations:
                    swarm.spawn_node(span)


def test_cpu_float32_and_bfloat16_nodes_in_one_chain(default_store, tmp_path):
    with LocalSwarm(str(default_store.path), tmp_path, node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start(3, default_store.manifest.num_blocks, dtypes=["float32", "bfloat16", "float32"])
        with RemoteModel.connect(swarm.initial_peers, default_store.path) as model:
            g = model.generate(PROMPT, 16)
            dtypes = sorted(r.dtype for r in model.view.records.values())
    assert dtypes == ["bfloat16", "float32", "float32"]
    assert g.text == "The capital of France is Paris."


def test_sigterm_drains_live_sessions_then_a_restart_resumes(default_store, tmp_path, reference_ids):
    """The only node of blocks 10:20 gets SIGTERM mid-answer: the answer still completes on it."""
    with LocalSwarm(str(default_store.path), tmp_path, node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start(3, default_store.manifest.num_blocks)
        middle = next(n for n in swarm.nodes if n.blocks == (10, 20))
        with RemoteModel.connect(swarm.initial_peers, default_store.path) as model:
            ids: list[int] = []
            with model.inference_session(max_length=128) as session:
                for event in session.stream(PROMPT, TOKENS, ignore_eos=True):
                    ids.append(event.token_id)
                    if len(ids) == 4:
                        middle.process.send_signal(signal.SIGTERM)
                failovers = session.runner.failovers
            assert middle.process.wait(timeout=60) == 0
            assert ids == reference_ids and failovers == 0
            log = open(middle.log).read()
            assert "draining" in log
            # Same identity and store: starts without re-packing and continues its ledger.
            restarted = swarm.spawn_node((10, 20), extra=["--identity", f"{middle.state_dir}/identity.key",
                                                          "--ledger", middle.ledger])
            assert restarted.peer_id == middle.peer_id
            assert "packing" not in open(restarted.log).read()
            model.view.bans = type(model.view.bans)()
            assert model.generate(PROMPT, 8).text.startswith("The capital")
