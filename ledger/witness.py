"""Witnessing peers' logs: cosign checkpoints that extend what we saw, keep evidence of forks.

`check_extension` is the pure rule. `witness` applies it inside the store's writer, so the last
checkpoint seen of each peer (a mutable table beside the log) is read and updated atomically
with the `witness` entry. Fetching checkpoints and proofs over the network is the caller's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from ledger import checkpoint as cp
from ledger import merkle, note
from ledger.entries import WitnessEntry
from ledger.errors import LedgerError, ProofError
from ledger.store import Store, Transaction

log = logging.getLogger(__name__)


class StaleCheckpointError(LedgerError):
    """The offered checkpoint is smaller than one already seen; fetch the peer's latest."""


@dataclass(frozen=True)
class ForkEvidence:
    """Two checkpoints, both signed by the peer's log key, that no append-only log can produce."""

    peer: str
    checkpoint_a: str
    checkpoint_b: str
    reason: str


@dataclass(frozen=True)
class WitnessOutcome:
    """The result of checking one checkpoint: a cosignature line, or fork evidence."""

    checkpoint: cp.Checkpoint
    cosignature: str | None = None
    entry_index: int | None = None
    fork: ForkEvidence | None = None


def check_extension(
    peer_id: str, log_public_key: bytes, previous: str | None, new: str, proof: Sequence[bytes]
) -> cp.Checkpoint | ForkEvidence:
    """The new checkpoint if it is validly signed and extends `previous` (None: first sight).

    Returns fork evidence if both are signed but inconsistent; raises NoteError for a bad
    signature and StaleCheckpointError for a checkpoint smaller than the one already seen.
    """
    new_checkpoint, _ = cp.open_checkpoint(new, peer_id, log_public_key)
    if previous is None:
        return new_checkpoint
    old_checkpoint, _ = cp.open_checkpoint(previous, peer_id, log_public_key)
    if new_checkpoint.size < old_checkpoint.size:
        raise StaleCheckpointError(
            f"{peer_id}'s checkpoint of size {new_checkpoint.size} is older than the one seen ({old_checkpoint.size})"
        )
    try:
        merkle.verify_consistency(
            old_checkpoint.size, new_checkpoint.size, proof, old_checkpoint.root, new_checkpoint.root
        )
    except ProofError as e:
        return ForkEvidence(
            peer_id, previous, new, f"no consistency from size {old_checkpoint.size} to {new_checkpoint.size}: {e}"
        )
    return new_checkpoint


def witness(
    store: Store, peer_id: str, log_public_key: bytes, new: str, proof: Sequence[bytes], now_ns: int | None = None
) -> Future[WitnessOutcome]:
    """Check `peer_id`'s checkpoint `new` against the last one this node saw, with `proof` the
    consistency proof between them (empty on first sight), then cosign it and log a `witness`
    entry, or record fork evidence. Raises (in the future) only for bad signatures or staleness."""
    now_ns = time.time_ns() if now_ns is None else now_ns

    def job(tx: Transaction) -> WitnessOutcome:
        row = tx.conn.execute("SELECT size, checkpoint FROM witnessed WHERE peer = ?", (peer_id,)).fetchone()
        previous = None if row is None else row[1]
        result = check_extension(peer_id, log_public_key, previous, new, proof)
        if isinstance(result, ForkEvidence):
            tx.conn.execute(
                "INSERT INTO forks (peer, checkpoint_a, checkpoint_b, reason, time_ns) VALUES (?, ?, ?, ?, ?)",
                (peer_id, result.checkpoint_a, result.checkpoint_b, result.reason, now_ns),
            )
            log.error("FORK: %s signed two inconsistent checkpoints (%s); evidence kept", peer_id, result.reason)
            return WitnessOutcome(cp.Checkpoint.from_text(note.parse(new).text), fork=result)
        line = cp.cosign_checkpoint(store.identity, note.parse(new), now_ns // 1_000_000_000).line()
        if row is not None and row[0] == result.size:
            return WitnessOutcome(result, cosignature=line)
        index = tx.append(WitnessEntry(peer=peer_id, checkpoint=new, cosignature=line, time_ns=now_ns))
        tx.conn.execute(
            "INSERT OR REPLACE INTO witnessed (peer, size, checkpoint, time_ns) VALUES (?, ?, ?, ?)",
            (peer_id, result.size, new, now_ns),
        )
        return WitnessOutcome(result, cosignature=line, entry_index=index)

    return store.submit(job)
