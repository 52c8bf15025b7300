"""Offline verification of a whole log: every signature, every leaf, the tree, every checkpoint.

`LogVerifier` checks a log's entries as a stream in O(log n) memory; `verify_ledger` runs it
over a ledger file (and also checks what the file stores beside the entries), `audit_entries`
over entries fetched from a peer. Any failure is a VerifyError naming the first bad index.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ledger import entries, merkle
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.entries import Entry, LogKeyEntry
from ledger.errors import LedgerError, VerifyError
from ledger.keys import public_key_from_peer_id
from ledger.store import Ledger, index_columns


class LogVerifier:
    """Feed a log's entries in order; each is checked against everything before it."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.public_key = public_key_from_peer_id(peer_id)
        self.frontier = merkle.Frontier()
        self.log_keys: LogKeyEntry | None = None

    @property
    def size(self) -> int:
        return self.frontier.size

    def add(self, data: bytes, signature: bytes) -> tuple[Entry, list[tuple[int, int, bytes]]]:
        """Check the next entry; returns it and the (level, index, hash) subtrees it completes."""
        index = self.size
        try:
            entries.verify_signature(self.public_key, data, signature)
            signed_index, entry = entries.decode(data)
            if signed_index != index:
                raise VerifyError(
                    index, f"holds the entry signed for index {signed_index}: rows were reordered or deleted"
                )
            entries.check_in_log(index, entry, self.peer_id, self.log_keys)
        except VerifyError:
            raise
        except LedgerError as e:
            raise VerifyError(index, str(e)) from None
        if isinstance(entry, LogKeyEntry):
            self.log_keys = entry
        return entry, self.frontier.append(merkle.leaf_hash(data))

    def check_checkpoint(self, signed: str, covers_from: int = 0) -> Checkpoint:
        """Check a signed checkpoint of the entries seen so far (those from `covers_from` on are new)."""
        if self.log_keys is None:
            raise VerifyError(0, "missing: no log_key entry certifies the checkpoint key")
        try:
            checkpoint, _ = open_checkpoint(signed, self.peer_id, self.log_keys.log_key)
        except LedgerError as e:
            raise VerifyError(covers_from, f"the signed checkpoint covering it is invalid: {e}") from None
        if checkpoint.size != self.size:
            raise VerifyError(
                min(checkpoint.size, self.size), f"the checkpoint signs {checkpoint.size} entries, not {self.size}"
            )
        if checkpoint.root != self.frontier.root():
            raise VerifyError(
                covers_from, f"entries {covers_from} to {self.size - 1} do not match the signed checkpoint"
            )
        return checkpoint


@dataclass(frozen=True)
class Report:
    """What a successful verification covered."""

    peer_id: str
    size: int
    root: bytes
    checkpoints: int


def verify_ledger(path: str | os.PathLike[str]) -> Report:
    """Verify a ledger file offline; raises VerifyError naming the first bad index.

    Everything is read from one snapshot, so a log a node is appending to verifies as it stood."""
    with Ledger(path) as opened, opened.snapshot() as ledger:
        verifier = LogVerifier(ledger.peer_id)
        checkpoints = ledger.checkpoints()
        pending = next(checkpoints, None)
        levels, covered, count = {}, 0, 0
        for row in ledger.rows():
            index = verifier.size
            if row.index != index:
                raise VerifyError(index, "missing: rows were deleted behind the ledger's back")
            entry, completed = verifier.add(row.data, row.signature)
            if row.leaf_hash != merkle.leaf_hash(row.data):
                raise VerifyError(index, "its stored leaf hash does not match its bytes")
            if row.columns != index_columns(entry, ledger.peer_id):
                raise VerifyError(index, "its stored search columns do not match its bytes")
            for level, node, digest in completed:
                stored = next(levels.setdefault(level, ledger.tree_nodes(level)), None)
                if stored != (node, digest):
                    raise VerifyError(node << level, f"stored tree node (level {level}, index {node}) is wrong")
            while pending is not None and pending[0] <= verifier.size:
                verifier.check_checkpoint(pending[1], covered)
                covered, count, pending = verifier.size, count + 1, next(checkpoints, None)
        if pending is not None:
            raise VerifyError(verifier.size, f"missing: a signed checkpoint covers {pending[0]} entries")
        if covered != verifier.size:
            raise VerifyError(covered, "no signed checkpoint covers the entries from here on")
        if ledger.tree_node_count() != verifier.size - verifier.size.bit_count():
            raise VerifyError(None, "the tree table holds nodes no entry accounts for")
        return Report(ledger.peer_id, verifier.size, verifier.frontier.root(), count)


def audit_entries(fetched: Iterable[tuple[bytes, bytes]], checkpoint: str, peer_id: str) -> Checkpoint:
    """Verify a peer's log as fetched over the network: (entry bytes, signature) from index 0 on,
    against its signed checkpoint of exactly that many entries. The transport is the caller's."""
    verifier = LogVerifier(peer_id)
    for data, signature in fetched:
        verifier.add(data, signature)
    return verifier.check_checkpoint(checkpoint)
