"""The dashboard's ledger explorer believes nothing unchecked: entries, proofs and cosignatures.

Real ledger files answer the `swarmlm.ledger` RPC through the node's own request handler; a lying
"node" alters what it sends, and the explorer must notice.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from ledger.checkpoint import log_key
from ledger.entries import ServeEntry
from ledger.keys import Identity
from ledger.store import Store
from ledger.witness import witness
from node.ledger_service import LedgerService
from routing.errors import PeerFailure, ProtocolError, RemoteError, StreamClosed
from swarmlm.api.ledger_explorer import LedgerExplorer, unreadable

ROOT = hashlib.sha256(b"model").digest()


def _serve(i: int, client: str) -> ServeEntry:
    return ServeEntry(session=f"session-{i}", client=client, manifest_root=ROOT, blocks=(0, 10), tokens=40 + i,
                      steps=8, start_ns=1, end_ns=2, steps_digest=hashlib.sha256(b"%d" % i).digest(), receipt=None,
                      time_ns=3)


class Nodes:
    """Peers answering ledger requests from real stores, as `node.ledger_service` does; `lie` alters replies."""

    def __init__(self, stores: dict[str, Store]) -> None:
        self.services = {peer: LedgerService(store, None) for peer, store in stores.items()}  # type: ignore[arg-type]
        self.lie: dict[str, str] = {}  # peer -> "entry" (flip a byte of the last entry) or "proof"

    async def request(self, peer: str, handler: str, frame: dict) -> dict:
        try:
            reply = self.services[peer]._answer(frame)
        except ProtocolError as e:
            raise RemoteError(peer, e.code.value, str(e)) from None
        if self.lie.get(peer) == "proof" and frame["op"] == "inclusion" and reply["proof"]:
            reply["proof"][0] = bytes(32)
        if self.lie.get(peer) == "entry" and frame["op"] == "entries" and frame["end"] > 1:
            data, signature = reply["entries"][-1]
            reply["entries"][-1] = [data[:-1] + bytes([data[-1] ^ 1]), signature]
        return reply


@pytest.fixture
def two_logs(tmp_path: Path):
    """Node A served three sessions and cosigned node B's checkpoint; B served one."""
    a, b = Identity.generate(), Identity.generate()
    stores = {a.peer_id: Store(tmp_path / "a.sqlite", a), b.peer_id: Store(tmp_path / "b.sqlite", b)}
    client = Identity.generate().peer_id
    for i in range(3):
        stores[a.peer_id].append_sync(_serve(i, client))
    stores[b.peer_id].append_sync(_serve(9, client))
    size_b, note_b = stores[b.peer_id].latest_checkpoint()
    witness(stores[a.peer_id], b.peer_id, log_key(b).public_key().public_bytes_raw(), note_b, []).result(10)
    yield a.peer_id, b.peer_id, size_b, Nodes(stores)
    for store in stores.values():
        store.close()


def test_serve_entries_come_with_verified_inclusion_proofs(two_logs):
    a, _, _, nodes = two_logs
    log = asyncio.run(LedgerExplorer(nodes).serves(a))  # type: ignore[arg-type]
    assert [s["session"] for s in log["serves"]] == ["session-2", "session-1", "session-0"]
    assert all(s["proof"]["valid"] and s["proof"]["tree_size"] == log["size"] for s in log["serves"])
    one = asyncio.run(LedgerExplorer(nodes).serves(a, session="session-1"))  # type: ignore[arg-type]
    assert [s["index"] for s in one["serves"]] == [2] and one["unverified_entries"] == 0


def test_a_bad_inclusion_proof_is_shown_invalid(two_logs):
    a, _, _, nodes = two_logs
    nodes.lie[a] = "proof"
    log = asyncio.run(LedgerExplorer(nodes).serves(a))  # type: ignore[arg-type]
    assert log["serves"] and not any(s["proof"]["valid"] for s in log["serves"])
    assert all(s["proof"]["error"] == "inclusion proof does not lead to the expected root" for s in log["serves"])


def test_an_altered_entry_is_counted_unverified_and_not_shown(two_logs):
    _, b, _, nodes = two_logs
    honest = asyncio.run(LedgerExplorer(nodes).serves(b))  # type: ignore[arg-type]
    assert [s["session"] for s in honest["serves"]] == ["session-9"]
    nodes.lie[b] = "entry"  # B's newest entry is its serve entry
    log = asyncio.run(LedgerExplorer(nodes).serves(b))  # type: ignore[arg-type]
    assert log["unverified_entries"] == 1 and log["serves"] == []


def test_checkpoints_carry_the_witnesses_verified_cosignatures(two_logs):
    a, b, size_b, nodes = two_logs
    found = asyncio.run(LedgerExplorer(nodes).checkpoints([a, b]))  # type: ignore[arg-type]
    assert [(c["witness"], c["size"]) for c in found[b]["cosignatures"]] == [(a, size_b)]
    assert found[a]["cosignatures"] == [] and found[a]["size"] == 5  # log key, 3 serves, 1 witness entry
    nodes.lie[a] = "entry"  # the witness entry is A's newest: altered, it no longer counts
    assert asyncio.run(LedgerExplorer(nodes).checkpoints([a, b]))[b]["cosignatures"] == []  # type: ignore[arg-type]


def test_why_a_ledger_is_unreadable_is_said_in_words() -> None:
    peer = Identity.generate().peer_id
    dial = PeerFailure(peer, "cannot open swarmlm.ledger: P2PDaemonError: failed to dial: all dials failed")
    assert unreadable(dial) == unreadable(StreamClosed(peer, "stream closed (ConnectionResetError)"))
    assert "probably stopped or left the swarm" in unreadable(dial) and "dial" not in unreadable(dial)
    assert unreadable(RemoteError(peer, "busy", "too much queued")) == "the node refused: too much queued"
    assert "malformed inclusion proof" in unreadable(PeerFailure(peer, "sent a malformed inclusion proof"))
