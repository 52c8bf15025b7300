"""`ledger verify` on a log that is being written: one snapshot, so never a false failure."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ledger.store import Store
from ledger.verify import verify_ledger
from tests.waiting import until

BATCHES_PER_ROUND = 3  # committed while each verification runs; the log stays small on a loaded machine


def _append_and_checkpoint(store: Store, path: Path, samples, go: threading.Semaphore, stop: threading.Event) -> None:
    """One batch of 5 (with its signed checkpoint) per `go` token, and WAL checkpoints, until `stop`."""
    wal = sqlite3.connect(path)
    try:
        i = 0
        while not stop.is_set():
            if not go.acquire(timeout=0.05):
                continue
            for future in [store.append(samples.load(i + k)) for k in range(5)]:
                future.result(30)
            i += 5
            if i % 50 == 0:
                wal.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        wal.close()


def _grown_past(store: Store, size: int) -> None:
    assert until(store.size, lambda n: n > size, timeout=60, interval=0.001) > size, "the writer stopped appending"


def test_verify_never_fails_while_the_node_appends(store: Store, ledger_path: Path, samples) -> None:
    go, stop = threading.Semaphore(0), threading.Event()
    writer = threading.Thread(target=_append_and_checkpoint, args=(store, ledger_path, samples, go, stop))
    writer.start()
    sizes = [1]
    try:
        for _ in range(30):
            go.release(BATCHES_PER_ROUND)
            _grown_past(store, sizes[-1])  # the writer is at work: verify while it appends the rest
            sizes.append(verify_ledger(ledger_path).size)
    finally:
        stop.set()
        writer.join()
    assert sizes == sorted(set(sizes))  # 30 different states of a growing log, each verified
    assert verify_ledger(ledger_path).size == store.size()
