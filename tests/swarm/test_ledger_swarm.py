"""The ledger in a live swarm: serve entries with client receipts, witnessing, remote audit."""

from __future__ import annotations

import json

import pytest

from ledger import canonical, merkle
from ledger.checkpoint import Checkpoint
from ledger.note import parse as parse_note
from ledger.receipts import Receipt, verify_receipt
from ledger.store import Ledger
from node.local_swarm import LocalSwarm
from routing import ledger_rpc
from swarmlm.sdk import RemoteModel
from tests.cli_call import run_cli
from tests.conftest import log_tails
from tests.waiting import until

PROMPTS = ["What is the capital of France?", "Name a colour."]


@pytest.fixture(scope="module")
def ledger_swarm(default_store, tmp_path_factory):
    """3 nodes announcing and witnessing every 2 s (so witnessing rounds come quickly), two generations."""
    state = tmp_path_factory.mktemp("ledger-swarm")
    with LocalSwarm(str(default_store.path), state / "swarm", announce_period=2.0,
                    node_args=["--witness-period", "2"]) as swarm:
        swarm.start(3, default_store.manifest.num_blocks)
        with RemoteModel.connect(swarm.initial_peers, default_store.path, identity=state / "client.key",
                                 ledger=state / "client.sqlite") as model:
            sessions = []
            for prompt in PROMPTS:
                with model.inference_session(max_length=128) as s:
                    s.generate(prompt, 8)
                sessions.append(s.runner.session_id)
            yield swarm, model, sessions, state / "client.sqlite"


def _serve_entries(ledger_path: str, block: int, capsys, expected: int) -> list[dict]:
    """`swarmlm ledger query --block B --kind serve --json`, polled until the node committed them."""
    def rows() -> list[dict]:
        proc = run_cli(["ledger", "query", "--ledger", ledger_path, "--block", str(block), "--kind", "serve", "--json"],
                       capsys)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    return until(rows, lambda found: len(found) >= expected, timeout=30, interval=0.5)


def test_each_nodes_ledger_names_exactly_its_sessions_with_valid_receipts(ledger_swarm, capsys):
    swarm, model, sessions, _ = ledger_swarm
    for node in swarm.nodes:
        a, b = node.blocks
        for block in (a, b - 1):
            rows = _serve_entries(node.ledger, block, capsys, len(sessions))
            assert sorted(r["entry"]["session"] for r in rows) == sorted(sessions)
            for r in rows:
                entry = r["entry"]
                assert entry["blocks"] == [a, b] and entry["client"] == model.client.peer_id
                receipt = entry["receipt"]
                assert receipt is not None and receipt["node"] == node.peer_id
                assert receipt["tokens"] == entry["tokens"] > 0
        # The receipts in the file verify cryptographically, not just by their JSON rendering.
        with Ledger(node.ledger) as log:
            for row in log.query(kind="serve"):
                verify_receipt(row.decode().receipt)


def test_the_clients_own_ledger_holds_its_receipts(ledger_swarm):
    swarm, model, sessions, client_ledger = ledger_swarm
    with Ledger(client_ledger) as log:
        receipts = [row.decode().receipt for row in log.query(kind="receipt")]
    assert len(receipts) == len(swarm.nodes) * len(sessions)
    assert {r.node for r in receipts} == {n.peer_id for n in swarm.nodes}
    for r in receipts:
        verify_receipt(r)
        assert isinstance(Receipt.from_wire(canonical.unpack(canonical.pack(r.to_wire()))), Receipt)


def test_ledger_verify_passes_on_every_node(ledger_swarm, capsys):
    swarm, *_ = ledger_swarm
    for node in swarm.nodes:
        proc = run_cli(["ledger", "verify", node.ledger], capsys)
        assert proc.returncode == 0 and proc.stdout.startswith("OK"), proc.stdout + proc.stderr


def test_nodes_witness_each_other(ledger_swarm):
    swarm, *_ = ledger_swarm
    peers = {n.peer_id for n in swarm.nodes}

    def witnessed() -> dict[str, set[str]]:
        seen = {}
        for node in swarm.nodes:
            with Ledger(node.ledger) as log:
                seen[node.peer_id] = {row.decode().peer for row in log.query(kind="witness")}
        return seen

    witnessed = until(witnessed, lambda seen: all(seen[p] == peers - {p} for p in peers), timeout=60, interval=1)
    assert all(witnessed[p] == peers - {p} for p in peers), witnessed
    for node in swarm.nodes:
        with Ledger(node.ledger) as log:
            assert log.forks() == []


def test_remote_audit_of_every_node(ledger_swarm, capsys):
    swarm, *_ = ledger_swarm
    for node in swarm.nodes:
        proc = run_cli(["ledger", "audit", node.peer_id, "--peers", *swarm.initial_peers, "--json"], capsys)
        assert proc.returncode == 0, proc.stdout + proc.stderr + log_tails(swarm)
        report = json.loads(proc.stdout)
        assert report["ok"] and report["size"] >= 3


def test_inclusion_proof_over_the_wire_verifies_against_the_checkpoint(ledger_swarm):
    swarm, model, *_ = ledger_swarm
    node = swarm.nodes[0]
    link = model.client
    size, note = link.run(ledger_rpc.checkpoint(link, node.peer_id))
    reply = link.run(ledger_rpc.request(link, node.peer_id, "inclusion", index=1, size=size))
    data, _ = reply["entry"]
    root = Checkpoint.from_text(parse_note(note).text).root
    merkle.verify_inclusion(1, size, merkle.leaf_hash(data), reply["proof"], root)
