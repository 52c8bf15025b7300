"""The SQLite store: group commit, append-only triggers, proofs at any size, offline verify,
and tampering behind the triggers' back caught at the first bad index."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from ledger import merkle
from ledger.checkpoint import open_checkpoint
from ledger.entries import LogKeyEntry
from ledger.errors import ReceiptError, StoreError, VerifyError
from ledger.keys import Identity
from ledger.store import Ledger, Store
from ledger.verify import audit_entries, verify_ledger


def test_new_ledger_starts_with_the_log_key_entry_and_a_checkpoint(store: Store, ledger_path: Path) -> None:
    assert store.size() == 1
    keys = store.row(0).decode()
    assert isinstance(keys, LogKeyEntry)
    size, signed = store.latest_checkpoint()
    checkpoint, _ = open_checkpoint(signed, store.peer_id, keys.log_key)
    assert size == checkpoint.size == 1 and checkpoint.root == merkle.leaf_hash(store.row(0).data)
    assert verify_ledger(ledger_path).size == 1


def test_appends_from_many_threads_get_distinct_contiguous_indices(store: Store, samples) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        futures = [store.append(samples.load(t * 100 + i)) for i in range(100)]
        with lock:
            results.extend(f.result(30) for f in futures)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 401))
    assert store.size() == 401


def test_every_batch_gets_a_signed_checkpoint_and_proofs_match_the_in_memory_tree(filled, ledger_path: Path) -> None:
    store = filled(300)
    hashes = [row.leaf_hash for row in store.rows()]
    sizes = [size for size, _ in store.checkpoints()]
    assert sizes[-1] == 301 and sizes == sorted(set(sizes))
    for size in (1, 2, 7, 64, 300, 301):
        assert store.root(size) == merkle.root_from_leaf_hashes(hashes[:size])
    for index in (0, 1, 150, 300):
        assert store.inclusion_proof(index, 301) == merkle.inclusion_proof(index, hashes)
    for size1 in (1, 5, 128, 300, 301):
        assert store.consistency_proof(size1, 301) == merkle.consistency_proof(size1, hashes)
    assert store.inclusion_proof(3, 10) == merkle.inclusion_proof(3, hashes[:10])
    report = verify_ledger(ledger_path)
    assert (report.size, report.checkpoints) == (301, len(sizes))


def test_a_failing_append_fails_alone(store: Store, identity: Identity, samples) -> None:
    good = store.append(samples.load(1))
    forged = samples.serve(identity, Identity.generate(), "s", (0, 2))
    bad = store.append(type(forged)(**{**forged.__dict__, "tokens": 99}))
    after = store.append(samples.load(2))
    assert good.result(10) == 1
    with pytest.raises(ReceiptError):
        bad.result(10)
    assert after.result(10) == 2
    assert store.size() == 3


def test_reopening_continues_the_same_log(ledger_path: Path, identity: Identity, samples) -> None:
    with Store(ledger_path, identity) as s:
        s.append_sync(samples.load(1))
        root = s.root(2)
    with Store(ledger_path, identity) as s:
        assert s.append_sync(samples.load(2)) == 2
        assert s.root(2) == root
    assert verify_ledger(ledger_path).size == 3


def test_a_ledger_refuses_another_identity(ledger_path: Path, store: Store) -> None:
    with pytest.raises(StoreError, match="ledger of"):
        Store(ledger_path, Identity.generate())


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100])
def test_opening_a_non_ledger_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a SwarmLM ledger|not a swarmlm-ledger"):
        Ledger(path)


def test_opening_a_foreign_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a SwarmLM ledger"):
        Ledger(path)
    with pytest.raises(StoreError, match="not a SwarmLM ledger"):
        Store(path, Identity.generate())


def test_missing_ledger_says_how_to_choose_one(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="--ledger"):
        Ledger(tmp_path / "absent.sqlite")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET entry = x'00' WHERE idx = 1",
        "DELETE FROM entries WHERE idx = 1",
        "DELETE FROM checkpoints",
        "UPDATE tree SET hash = x'00'",
        "UPDATE meta SET value = 'x'",
    ],
)
def test_triggers_refuse_updates_and_deletes(filled, ledger_path: Path, statement: str) -> None:
    filled(4)
    conn = sqlite3.connect(ledger_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(statement)
    conn.close()
    assert verify_ledger(ledger_path).size == 5


# --- Tampering behind the triggers' back (as with the sqlite3 shell). ---


def _tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _flip_byte(path: Path, column: str, index: int, at: int) -> None:
    """Flip the low bit of byte `at` of a blob column of entry `index`."""
    with Ledger(path) as ledger:
        blob = getattr(ledger.row(index), {"entry": "data"}.get(column, column))
    flipped = blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]
    _tamper(path, f"UPDATE entries SET {column} = x'{flipped.hex()}' WHERE idx = {index}")


def _first_bad_index(path: Path) -> int | None:
    with pytest.raises(VerifyError) as failure:
        verify_ledger(path)
    return failure.value.index


@pytest.mark.parametrize("at", [0, 5, 20, -1])
def test_flipping_any_byte_of_an_entry_names_it(filled, ledger_path: Path, at: int) -> None:
    filled(20)
    size = len(Ledger(ledger_path).row(7).data)
    _flip_byte(ledger_path, "entry", 7, at % size)
    assert _first_bad_index(ledger_path) == 7


@pytest.mark.parametrize("column", ["signature", "leaf_hash"])
def test_flipping_a_byte_of_a_signature_or_leaf_hash_names_the_entry(filled, ledger_path: Path, column: str) -> None:
    filled(20)
    _flip_byte(ledger_path, column, 12, 3)
    assert _first_bad_index(ledger_path) == 12


def test_deleting_a_row_names_the_gap(filled, ledger_path: Path) -> None:
    filled(20)
    _tamper(ledger_path, "DELETE FROM entries WHERE idx = 9")
    assert _first_bad_index(ledger_path) == 9


def test_deleting_the_newest_row_is_caught_by_its_checkpoint(filled, ledger_path: Path) -> None:
    filled(20)
    _tamper(ledger_path, "DELETE FROM entries WHERE idx = 20")
    assert _first_bad_index(ledger_path) == 20


def test_swapping_two_rows_names_the_first(filled, ledger_path: Path) -> None:
    filled(20)
    _tamper(
        ledger_path,
        "UPDATE entries SET idx = -1 WHERE idx = 5",
        "UPDATE entries SET idx = 5 WHERE idx = 14",
        "UPDATE entries SET idx = 14 WHERE idx = -1",
    )
    assert _first_bad_index(ledger_path) == 5


def test_changing_a_search_column_is_caught(filled, ledger_path: Path) -> None:
    filled(20)
    _tamper(ledger_path, "UPDATE entries SET block_start = 29 WHERE idx = 3")
    assert _first_bad_index(ledger_path) == 3


def test_changing_a_stored_tree_node_is_caught(filled, ledger_path: Path) -> None:
    filled(20)
    _tamper(ledger_path, "UPDATE tree SET hash = zeroblob(32) WHERE level = 2 AND idx = 1")
    assert _first_bad_index(ledger_path) == 4


def test_a_forged_checkpoint_is_caught(filled, ledger_path: Path) -> None:
    filled(20)
    size, signed = Ledger(ledger_path).latest_checkpoint()
    lines = signed.split("\n")
    lines[2] = "A" * 43 + "="
    _tamper(ledger_path, f"UPDATE checkpoints SET note = '{chr(10).join(lines)}' WHERE size = {size}")
    with pytest.raises(VerifyError):
        verify_ledger(ledger_path)


def test_audit_checks_fetched_entries_against_the_signed_checkpoint(filled) -> None:
    store = filled(10)
    rows = [(row.data, row.signature) for row in store.rows()]
    size, signed = store.latest_checkpoint()
    assert audit_entries(rows, signed, store.peer_id).size == size
    with pytest.raises(VerifyError) as failure:
        audit_entries(rows[:4] + rows[5:], signed, store.peer_id)
    assert failure.value.index == 4
    with pytest.raises(VerifyError):
        audit_entries(rows[:-1], signed, store.peer_id)
    with pytest.raises(VerifyError):
        audit_entries(rows, signed, Identity.generate().peer_id)
