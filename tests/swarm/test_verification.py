"""Verification: a dishonest node is caught, banned and proven wrong; honest ones are never accused."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.keys import Identity
from ledger.store import Ledger
from node.local_swarm import LocalSwarm
from routing.evidence import Evidence, check_evidence
from shards.store import ShardStore
from swarmlm.sdk import RemoteModel
from tests.cli_call import run_cli
from tests.conftest import FIXED_THROUGHPUT, SWARMLM, log_tails
from tests.waiting import route_first

PROMPT = "What is the capital of France?"
DISHONEST = [sys.executable, str(Path(__file__).with_name("dishonest_node.py"))]


def _spot_checks_between_float32_and_bfloat16_accuse_no_one(store: ShardStore, tmp_path: Path, checks: int,
                                                            tokens: int) -> None:
    """Blocks 0:10 served by a bfloat16 node (preferred) and a float32 node that checks it at every step."""
    with LocalSwarm(str(store.path), tmp_path, node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start(0, 30)
        swarm.await_nodes([swarm.spawn_node((0, 10), dtype="bfloat16", extra=["--throughput", "100000"], wait=False),
                           swarm.spawn_node((0, 10), dtype="float32", wait=False),
                           swarm.spawn_node((10, 30), dtype="float32", wait=False)])
        with RemoteModel.connect(swarm.initial_peers, store.path, spot_check_rate=1.0, seed=0,
                                 evidence_dir=tmp_path / "evidence") as model:
            prompts = ["Tell me about Rome.", "Write a poem about the sea.", "Explain photosynthesis.",
                       "List five fruits.", PROMPT, "Who wrote Hamlet?", "Name a planet."]
            for i in range(2 * checks // tokens + 1):  # bounded; each generation adds tokens + 1 checks on 0:10
                model.generate(prompts[i % len(prompts)], tokens, ignore_eos=True)
                if model.verifier.stats.checks >= checks:
                    break
            stats = model.verifier.stats
    assert stats.checks >= checks and stats.convicted == [] and model.evidence == [], log_tails(swarm)


def test_spot_checks_between_float32_and_bfloat16_accuse_no_one(default_store, tmp_path):
    _spot_checks_between_float32_and_bfloat16_accuse_no_one(default_store, tmp_path, checks=30, tokens=16)


@pytest.mark.long
def test_200_spot_checks_between_float32_and_bfloat16_accuse_no_one(default_store, tmp_path):
    _spot_checks_between_float32_and_bfloat16_accuse_no_one(default_store, tmp_path, checks=200, tokens=24)


@pytest.fixture(scope="module")
def mixed_swarm(default_store, tmp_path_factory):
    """Honest nodes on every span, a second honest one and a dishonest one on 10:20.

    The dishonest node announces a huge throughput; the test's client also counts the honest 10:20
    node as far away (`route_first`), so it routes through the liar first however pings vary.
    """
    with LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("verify"), node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start(3, 30)
        _, liar = swarm.await_nodes([
            swarm.spawn_node((10, 20), wait=False),
            swarm.spawn_node((10, 20), extra=["--throughput", "100000"], program=DISHONEST, wait=False)])
        yield swarm, liar


@pytest.fixture(scope="module")
def caught(mixed_swarm, default_store, tmp_path_factory):
    swarm, liar = mixed_swarm
    client_dir = tmp_path_factory.mktemp("client")
    with RemoteModel.connect(swarm.initial_peers, default_store.path, spot_check_rate=1.0, seed=0,
                             ledger=client_dir / "ledger.sqlite", evidence_dir=client_dir / "evidence") as model:
        route_first(model, [liar.peer_id], [n.peer_id for n in swarm.nodes if n.blocks == (10, 20) and n is not liar])
        with model.inference_session(max_length=64) as session:
            g = session.generate(PROMPT, 16)
        yield model, g, client_dir


def test_the_dishonest_node_is_caught_within_5_steps_and_banned(mixed_swarm, caught):
    _, liar = mixed_swarm
    model, _, _ = caught
    assert model.verifier.stats.convicted == [liar.peer_id]
    assert liar.peer_id in model.view.bans
    [(evidence, _)] = model.evidence
    assert evidence.dishonest == liar.peer_id and evidence.step.attestation.step < 5


def test_the_answer_equals_the_honest_answer(caught, local_model):
    _, g, _ = caught
    assert g.token_ids == local_model.generate(PROMPT, 16).token_ids
    assert g.text == "The capital of France is Paris."


def test_evidence_is_in_the_clients_ledger(caught):
    model, _, client_dir = caught
    with Ledger(client_dir / "ledger.sqlite") as log:
        [row] = list(log.query(kind="evidence"))
        assert row.decode().payload["dishonest"] == model.evidence[0][0].dishonest


def test_check_evidence_confirms_in_a_fresh_process_with_only_shards_and_file(caught, default_store, tmp_path):
    model, _, _ = caught
    _, path = model.evidence[0]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SWARMLM_HOME": str(tmp_path / "empty"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(SWARMLM + ["ledger", "check-evidence", str(path), "--model", str(default_store.path),
                                     "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["confirmed"] and report["dishonest"] == model.evidence[0][0].dishonest


def test_another_client_sees_the_published_evidence_and_avoids_the_node(mixed_swarm, caught, default_store):
    swarm, liar = mixed_swarm
    with RemoteModel.connect(swarm.initial_peers, default_store.path) as other:
        assert liar.peer_id in other.view.bans
        assert any(j and j.valid for j in other.view.judged.values())
        assert other.generate(PROMPT, 16).text == "The capital of France is Paris."


def test_forged_evidence_is_rejected(caught, default_store, tmp_path, capsys):
    model, _, _ = caught
    evidence, path = model.evidence[0]
    forged = tmp_path / "forged.evidence"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the publisher's signature
    forged.write_bytes(bytes(data))
    proc = run_cli(["ledger", "check-evidence", str(forged), "--model", str(default_store.path)], capsys)
    assert proc.returncode == 2 and "not signed by its publisher" in proc.stderr


def test_evidence_against_the_honest_node_is_rejected(caught, default_store, tmp_path, capsys):
    model, _, _ = caught
    evidence, _ = model.evidence[0]
    # the liar usually runs the step and the honest node the check, but routing may swap them
    [honest] = {evidence.step.attestation.node, evidence.forward.attestation.node} - {evidence.dishonest}
    framed = dataclasses.replace(evidence, dishonest=honest).signed(Identity.generate())
    assert not check_evidence(framed, default_store).valid
    path = tmp_path / "framed.evidence"
    path.write_bytes(framed.to_bytes())
    proc = run_cli(["ledger", "check-evidence", str(path), "--model", str(default_store.path)], capsys)
    assert proc.returncode == 1 and proc.stdout.startswith("REJECTED")
    assert Evidence.from_bytes(framed.to_bytes()).dishonest == honest


def test_audit_flags_the_dishonest_node_and_passes_the_honest(mixed_swarm, default_store, capsys):
    swarm, liar = mixed_swarm
    proc = run_cli(["audit", "--json", "--seed", "1", "--model", str(default_store.path),
                    "--peers", *swarm.initial_peers], capsys)
    assert proc.returncode == 1, proc.stderr
    verdicts = {r["peer_id"]: r["verdict"] for r in map(json.loads, proc.stdout.splitlines())}
    assert verdicts.pop(liar.peer_id) == "FAIL"
    assert len(verdicts) == 4 and set(verdicts.values()) == {"PASS"}, proc.stdout + log_tails(swarm)
