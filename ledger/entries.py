"""Ledger entries: one schema per kind, canonical bytes, and the node's signature over them.

An entry's bytes are the canonical msgpack map `{"kind", "index", ...fields}`: the index inside
the signed bytes pins each entry to its place, so rows swapped or replayed behind the store's
back fail verification at the first misplaced index. Those bytes are the Merkle leaf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ledger import canonical, keys
from ledger.checkpoint import Checkpoint, verify_cosignature
from ledger.errors import EncodingError, ReceiptError, SignatureError
from ledger.keys import Identity
from ledger.note import MAX_NOTE_SIZE
from ledger.note import parse as parse_note
from ledger.receipts import Receipt, verify_receipt
from ledger.schema import (BLOCKS, DIGEST, DIGESTS, MAP, PEER_ID, PUBLIC_KEY, TEXT, UINT, FieldType, Record, added,
                           nested, spec)

NOTE = FieldType(
    f"note text of at most {MAX_NOTE_SIZE} characters", lambda v: type(v) is str and 0 < len(v) <= MAX_NOTE_SIZE
)


@dataclass(frozen=True)
class Entry(Record):
    """Base of every kind; `time_ns` is when the node logged it (Unix nanoseconds)."""

    kind: ClassVar[str]


@dataclass(frozen=True)
class LogKeyEntry(Entry):
    """Entry 0: the identity certifies the keys that sign checkpoints and cosignatures."""

    kind = name = "log_key"
    log_key: bytes = spec(PUBLIC_KEY)
    witness_key: bytes = spec(PUBLIC_KEY)
    time_ns: int = spec(UINT)


@dataclass(frozen=True)
class LoadEntry(Entry):
    """The node loaded blocks [start, end) of a model and checked these shard digests."""

    kind = name = "load"
    manifest_root: bytes = spec(DIGEST)
    blocks: tuple[int, int] = spec(BLOCKS)
    shard_digests: tuple[bytes, ...] = spec(DIGESTS)
    device: str = spec(TEXT)
    dtype: str = spec(TEXT)
    time_ns: int = spec(UINT)
    base_root: bytes | None = added(DIGEST)  # a derived (quantized) store: manifest_root is its own root,
    scheme: str | None = added(TEXT)  # derived from base_root by this scheme


@dataclass(frozen=True)
class ServeEntry(Entry):
    """The node served one inference session; `receipt` is None when the client sent none.

    `tokens` counts every position computed, `accepted_tokens` those the client kept (rejected
    speculative drafts are rolled back); entries logged before speculation existed have no
    `accepted_tokens`, meaning all were kept."""

    kind = name = "serve"
    session: str = spec(TEXT)
    client: str = spec(PEER_ID)
    manifest_root: bytes = spec(DIGEST)
    blocks: tuple[int, int] = spec(BLOCKS)
    tokens: int = spec(UINT)
    steps: int = spec(UINT)
    start_ns: int = spec(UINT)
    end_ns: int = spec(UINT)
    steps_digest: bytes = spec(DIGEST)
    receipt: Receipt | None = nested(Receipt, optional=True)
    time_ns: int = spec(UINT)
    accepted_tokens: int | None = added(UINT)  # tokens kept: `tokens` minus rejected speculative drafts


@dataclass(frozen=True)
class ReceiptEntry(Entry):
    """A client's own log: a receipt it signed for a node, to prove what it was served."""

    kind = name = "receipt"
    receipt: Receipt = nested(Receipt)
    time_ns: int = spec(UINT)


@dataclass(frozen=True)
class WitnessEntry(Entry):
    """The node checked another node's checkpoint for consistency and cosigned it."""

    kind = name = "witness"
    peer: str = spec(PEER_ID)
    checkpoint: str = spec(NOTE)
    cosignature: str = spec(NOTE)
    time_ns: int = spec(UINT)

    def cosigned_note(self) -> str:
        """The peer's signed checkpoint with this node's cosignature line appended."""
        return self.checkpoint + self.cosignature


@dataclass(frozen=True)
class EvidenceEntry(Entry):
    """Reserved for signed attestations and a verdict; the payload is opaque for now."""

    kind = name = "evidence"
    payload: dict[str, Any] = spec(MAP)
    time_ns: int = spec(UINT)


KINDS: dict[str, type[Entry]] = {
    cls.kind: cls for cls in (LogKeyEntry, LoadEntry, ServeEntry, ReceiptEntry, WitnessEntry, EvidenceEntry)
}


def encode(index: int, entry: Entry) -> bytes:
    """The canonical bytes of `entry` at position `index`: the Merkle leaf and what is signed."""
    return canonical.pack({"kind": entry.kind, "index": index, **entry.to_wire()})


def decode(data: bytes) -> tuple[int, Entry]:
    """Strictly decode an entry's bytes into its index and typed entry."""
    wire = canonical.unpack(data)
    if type(wire) is not dict:
        raise EncodingError("an entry must be a map")
    kind, index = wire.pop("kind", None), wire.pop("index", None)
    if type(kind) is not str or kind not in KINDS:
        raise EncodingError(f"unknown entry kind {kind!r:.40}")
    if type(index) is not int or index < 0:
        raise EncodingError("entry index must be a non-negative integer")
    return index, KINDS[kind].from_wire(wire)


def sign(identity: Identity, data: bytes) -> bytes:
    """The node's signature over an entry's bytes, in the ledger-entry context."""
    return identity.sign(keys.LEDGER_ENTRY, data)


def verify_signature(signer: str | bytes, data: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signer` (peer ID or public key) signed the entry bytes."""
    if not keys.verify(signer, keys.LEDGER_ENTRY, data, signature):
        name = signer if isinstance(signer, str) else signer.hex()
        raise SignatureError(f"entry is not signed by {name}")


def certified_log_keys(peer_id: str, data: bytes, signature: bytes) -> LogKeyEntry:
    """The checkpoint and witness keys `peer_id` certified in its log's entry 0 (given as fetched)."""
    verify_signature(peer_id, data, signature)
    index, entry = decode(data)
    if index != 0 or not isinstance(entry, LogKeyEntry):
        raise EncodingError("that is not a log's entry 0 (the log_key entry)")
    return entry


def _check_receipt(entry: ServeEntry, node: str) -> None:
    receipt = entry.receipt
    if receipt is None:
        return
    verify_receipt(receipt)
    claimed = (receipt.node, receipt.client, receipt.session, receipt.manifest_root, receipt.blocks, receipt.tokens)
    logged = (node, entry.client, entry.session, entry.manifest_root, entry.blocks, entry.tokens)
    if receipt.accepted_tokens is not None:  # receipts from before speculation do not name it
        claimed, logged = (*claimed, receipt.accepted_tokens), (*logged, entry.accepted_tokens)
    if claimed != logged:
        raise ReceiptError(
            f"receipt for session {receipt.session!r} does not match the session served "
            "(node, client, session, model, blocks or tokens differ); log it unreceipted"
        )


def check_in_log(index: int, entry: Entry, node: str, log_keys: LogKeyEntry | None) -> None:
    """Rules that depend on the entry's place and owner: entry 0 (and only it) certifies the log
    keys; receipts are signed by their client and match the session; cosignatures verify."""
    if (index == 0) != isinstance(entry, LogKeyEntry):
        raise EncodingError("entry 0, and only entry 0, must be the log_key entry")
    if isinstance(entry, ServeEntry):
        _check_receipt(entry, node)
    elif isinstance(entry, ReceiptEntry):
        verify_receipt(entry.receipt)
        if entry.receipt.client != node:
            raise ReceiptError("a receipt entry must hold a receipt this log's owner signed as client")
    elif isinstance(entry, WitnessEntry):
        cosigned = parse_note(entry.cosigned_note())
        if Checkpoint.from_text(cosigned.text).peer_id != entry.peer:
            raise EncodingError(f"witnessed checkpoint is not {entry.peer}'s")
        if log_keys is not None:
            verify_cosignature(cosigned, node, log_keys.witness_key)
