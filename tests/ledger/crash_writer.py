"""Append to a ledger as fast as possible, printing `index sha256(entry bytes)` per acknowledgement.

Run by the crash test, which SIGKILLs it at random moments: every line printed is an entry the
store acknowledged, so it must survive the kill unchanged.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from concurrent.futures import Future

from ledger import entries
from ledger.entries import LoadEntry
from ledger.keys import Identity
from ledger.store import Store


def main(ledger_path: str, identity_path: str, run: int) -> None:
    store = Store(ledger_path, Identity.load_or_create(identity_path))
    window = threading.Semaphore(2000)
    print("ready", flush=True)
    seq = 0
    while True:
        window.acquire()
        entry = LoadEntry(
            manifest_root=hashlib.sha256(b"%d:%d" % (run, seq)).digest(),
            blocks=(seq % 30, seq % 30 + 1),
            shard_digests=(hashlib.sha256(b"shard").digest(),),
            device="cpu",
            dtype="bfloat16",
            time_ns=run * 10**12 + seq,
        )

        def acknowledged(future: Future[int], entry: LoadEntry = entry) -> None:
            index = future.result()
            print(index, hashlib.sha256(entries.encode(index, entry)).hexdigest(), flush=True)
            window.release()

        store.append(entry).add_done_callback(acknowledged)
        seq += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
