"""Self-contained inclusion proofs: one JSON document anyone can check offline from a peer ID.

The document carries the entry and its signature, the Merkle path, the signed checkpoint, and
entry 0 (the identity's certificate of the checkpoint key), so the chain peer ID -> log key ->
checkpoint -> root -> entry needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import entries, merkle
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.entries import Entry
from ledger.errors import ProofError
from ledger.note import b64decode_canonical, b64encode
from ledger.store import Ledger

FORMAT = "swarmlm-inclusion-proof/v1"
_FIELDS = {
    "format",
    "peer_id",
    "index",
    "tree_size",
    "entry",
    "signature",
    "proof",
    "checkpoint",
    "log_key_entry",
    "log_key_signature",
}


def make_inclusion_proof(ledger: Ledger, index: int) -> dict[str, Any]:
    """The proof document for entry `index` against the ledger's latest checkpoint."""
    size, signed = ledger.latest_checkpoint()
    if not 0 <= index < size:
        raise ProofError(f"entry {index} is not covered by the latest checkpoint (size {size})")
    row, first = ledger.row(index), ledger.row(0)
    return {
        "format": FORMAT,
        "peer_id": ledger.peer_id,
        "index": index,
        "tree_size": size,
        "entry": b64encode(row.data),
        "signature": b64encode(row.signature),
        "proof": [b64encode(h) for h in ledger.inclusion_proof(index, size)],
        "checkpoint": signed,
        "log_key_entry": b64encode(first.data),
        "log_key_signature": b64encode(first.signature),
    }


@dataclass(frozen=True)
class ProvenEntry:
    """An entry shown to be in a peer's log under a checkpoint that peer signed."""

    peer_id: str
    index: int
    entry: Entry
    checkpoint: Checkpoint


def _b64(doc: dict[str, Any], key: str) -> bytes:
    if type(doc[key]) is not str:
        raise ProofError(f"proof field {key!r} must be a base64 string")
    return b64decode_canonical(doc[key], f"proof field {key!r}")


def check_inclusion_proof(doc: Any, peer_id: str | None = None) -> ProvenEntry:
    """Verify a proof document offline; `peer_id`, if given, must be the log's owner."""
    if type(doc) is not dict or set(doc) != _FIELDS or doc["format"] != FORMAT:
        raise ProofError(f"not a {FORMAT} document (expected exactly the fields {sorted(_FIELDS)})")
    owner = doc["peer_id"]
    if peer_id is not None and owner != peer_id:
        raise ProofError(f"the proof is about {owner}'s log, not {peer_id}'s")
    if type(owner) is not str or type(doc["proof"]) is not list or type(doc["checkpoint"]) is not str:
        raise ProofError("proof fields 'peer_id' and 'checkpoint' must be strings and 'proof' a list")
    log_keys = entries.certified_log_keys(owner, _b64(doc, "log_key_entry"), _b64(doc, "log_key_signature"))
    checkpoint, _ = open_checkpoint(doc["checkpoint"], owner, log_keys.log_key)
    data = _b64(doc, "entry")
    entries.verify_signature(owner, data, _b64(doc, "signature"))
    index, entry = entries.decode(data)
    entries.check_in_log(index, entry, owner, log_keys)
    if index != doc["index"] or checkpoint.size != doc["tree_size"]:
        raise ProofError("the proof's index or tree size disagrees with the signed entry or checkpoint")
    path = [b64decode_canonical(h, "proof hash") if type(h) is str else b"" for h in doc["proof"]]
    merkle.verify_inclusion(index, checkpoint.size, merkle.leaf_hash(data), path, checkpoint.root)
    return ProvenEntry(owner, index, entry, checkpoint)
