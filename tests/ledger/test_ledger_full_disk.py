"""A full disk loses no entry: appends wait and commit in order once there is room again, and a
store closed while the disk is still full writes what waits to the side file.

The ledger lives on a real 2 MiB tmpfs, filled up by a filler file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import canonical, entries
from ledger.errors import StoreError
from ledger.keys import Identity
from ledger.store import Store, unwritten_path
from ledger.verify import verify_ledger

from ..full_disk import fill, tmpfs
from ..waiting import until


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk") as mount:
        yield mount


def _decode_unwritten(line: str) -> entries.Entry:
    record = json.loads(line)
    wire = canonical.unpack(bytes.fromhex(record["entry"]))
    assert wire.pop("kind") == record["kind"]
    return entries.KINDS[record["kind"]].from_wire(wire)


def test_appends_on_a_full_disk_wait_and_all_commit_in_order_once_there_is_room(
    tiny_disk: Path, identity: Identity, samples, caplog: pytest.LogCaptureFixture
) -> None:
    path = tiny_disk / "ledger.sqlite"
    store = Store(path, identity, time_ns=samples.T0)
    try:
        filler = fill(tiny_disk)
        with caplog.at_level(logging.INFO, logger="ledger.store"):
            futures = [store.append(samples.load(i)) for i in range(300)]
            assert until(lambda: store.health().failures >= 3, timeout=20, interval=0.02)  # it failed, and kept retrying
            health = store.health()
            assert not health.ok and health.pending == 300 and "full" in (health.last_error or "")
            assert not any(f.done() for f in futures) and store.size() == 1
            filler.unlink()
            assert [f.result(30) for f in futures] == list(range(1, 301))
        final = store.health()
        assert (final.ok, final.pending, final.unwritten) == (True, 0, 0) and final.failures >= health.failures
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "cannot commit" in errors[0].getMessage()  # once per episode
        assert any(r.levelno == logging.INFO and "commits again" in r.getMessage() for r in caplog.records)
        assert [row.decode() for row in store.rows(1)] == [samples.load(i) for i in range(300)]
    finally:
        store.close()
    assert verify_ledger(path).size == 301
    assert not unwritten_path(path).exists()


def test_closing_while_the_disk_is_full_writes_the_waiting_entries_to_the_side_file(
    tiny_disk: Path, identity: Identity, samples
) -> None:
    path = tiny_disk / "ledger.sqlite"
    store = Store(path, identity, time_ns=samples.T0)
    filler = fill(tiny_disk)
    futures = [store.append(samples.load(i)) for i in range(5)]
    assert until(lambda: not store.health().ok, timeout=20, interval=0.02)
    store.close()
    for f in futures:
        with pytest.raises(StoreError, match="unwritten"):
            f.result(0)
    lines = unwritten_path(path).read_text().splitlines()
    assert [_decode_unwritten(line) for line in lines] == [samples.load(i) for i in range(5)]
    filler.unlink()
    assert verify_ledger(path).size == 1


def test_beyond_max_pending_new_entries_are_given_up_loudly_and_the_rest_commit(
    tiny_disk: Path, identity: Identity, samples
) -> None:
    path = tiny_disk / "ledger.sqlite"
    store = Store(path, identity, max_pending=3, time_ns=samples.T0)
    try:
        filler = fill(tiny_disk)
        waiting = [store.append(samples.load(i)) for i in range(3)]
        assert until(lambda: not store.health().ok, timeout=20, interval=0.02)
        refused = [store.append(samples.load(i)) for i in (3, 4)]
        for f in refused:
            with pytest.raises(StoreError, match="already wait"):
                f.result(10)
        assert store.health().unwritten == 2
        filler.unlink()
        assert [f.result(30) for f in waiting] == [1, 2, 3]
    finally:
        store.close()
    lines = unwritten_path(path).read_text().splitlines()
    assert [_decode_unwritten(line) for line in lines] == [samples.load(3), samples.load(4)]
    assert verify_ledger(path).size == 4
