"""Witnessing: cosign checkpoints that extend what was seen, keep signed evidence of forks."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import note
from ledger.checkpoint import verify_cosignature
from ledger.entries import WitnessEntry, certified_log_keys
from ledger.errors import NoteError
from ledger.keys import Identity
from ledger.store import Store
from ledger.verify import verify_ledger
from ledger.witness import StaleCheckpointError, witness


@pytest.fixture
def peer(tmp_path: Path, samples):
    """Another node's ledger, and a way to grow it and fetch what a witness needs."""
    identity = Identity.generate()
    store = Store(tmp_path / "peer.sqlite", identity)
    first = store.row(0)
    log_key = certified_log_keys(identity.peer_id, first.data, first.signature).log_key

    def grow(n: int) -> str:
        for i in range(n):
            store.append_sync(samples.load(i))
        return store.latest_checkpoint()[1]

    yield identity, store, log_key, grow
    store.close()


def test_first_sight_is_cosigned_and_logged(store: Store, ledger_path: Path, peer) -> None:
    peer_identity, _, log_key, grow = peer
    checkpoint = grow(3)
    outcome = witness(store, peer_identity.peer_id, log_key, checkpoint, []).result(10)
    assert outcome.fork is None and outcome.checkpoint.size == 4
    logged = store.row(outcome.entry_index).decode()
    assert isinstance(logged, WitnessEntry) and logged.peer == peer_identity.peer_id
    witness_key = store.row(0).decode().witness_key
    assert verify_cosignature(note.parse(checkpoint + outcome.cosignature), store.peer_id, witness_key) > 0
    assert store.witnessed(peer_identity.peer_id) == (4, checkpoint)
    verify_ledger(ledger_path)


def test_growth_is_cosigned_with_a_consistency_proof(store: Store, peer) -> None:
    peer_identity, peer_store, log_key, grow = peer
    witness(store, peer_identity.peer_id, log_key, grow(2), []).result(10)
    newer = grow(5)
    proof = peer_store.consistency_proof(3, 8)
    outcome = witness(store, peer_identity.peer_id, log_key, newer, proof).result(10)
    assert outcome.entry_index is not None and store.witnessed(peer_identity.peer_id)[0] == 8
    again = witness(store, peer_identity.peer_id, log_key, newer, []).result(10)
    assert again.cosignature and again.entry_index is None


def test_an_older_checkpoint_is_refused_as_stale(store: Store, peer) -> None:
    peer_identity, _, log_key, grow = peer
    older = grow(1)
    witness(store, peer_identity.peer_id, log_key, grow(1), []).result(10)
    with pytest.raises(StaleCheckpointError):
        witness(store, peer_identity.peer_id, log_key, older, []).result(10)


def test_a_checkpoint_not_signed_by_the_log_key_is_refused(store: Store, peer) -> None:
    peer_identity, _, _, grow = peer
    with pytest.raises(NoteError):
        witness(store, peer_identity.peer_id, peer_identity.public_key, grow(1), []).result(10)
    assert store.witnessed(peer_identity.peer_id) is None


def test_a_forked_log_yields_evidence_and_no_cosignature(store: Store, tmp_path: Path, peer, samples) -> None:
    peer_identity, peer_store, log_key, grow = peer
    witness(store, peer_identity.peer_id, log_key, grow(2), []).result(10)
    with Store(tmp_path / "fork.sqlite", peer_identity) as fork:  # same key, different history
        for i in range(3):
            fork.append_sync(samples.load(100 + i))
        forked = fork.latest_checkpoint()[1]
        proof = fork.consistency_proof(3, 4)
    outcome = witness(store, peer_identity.peer_id, log_key, forked, proof).result(10)
    assert outcome.cosignature is None and outcome.fork is not None
    assert store.witnessed(peer_identity.peer_id)[0] == 3  # the fork did not replace what we saw
    (recorded,) = store.forks()
    assert recorded[:3] == (peer_identity.peer_id, outcome.fork.checkpoint_a, forked)


def test_same_size_different_root_is_a_fork(store: Store, tmp_path: Path, peer, samples) -> None:
    peer_identity, _, log_key, grow = peer
    witness(store, peer_identity.peer_id, log_key, grow(1), []).result(10)
    with Store(tmp_path / "fork.sqlite", peer_identity) as fork:
        fork.append_sync(samples.load(7))
        forked = fork.latest_checkpoint()[1]
    assert witness(store, peer_identity.peer_id, log_key, forked, []).result(10).fork is not None
