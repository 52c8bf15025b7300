"""Canonical msgpack, entry schemas and client receipts: one encoding, strictly parsed."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from ledger import canonical, entries
from ledger.entries import EvidenceEntry, LogKeyEntry
from ledger.errors import EncodingError, ReceiptError
from ledger.keys import Identity
from ledger.receipts import verify_receipt


def test_maps_are_written_with_sorted_keys_whatever_the_insertion_order() -> None:
    assert canonical.pack({"b": 1, "a": [b"x", None, True]}) == canonical.pack({"a": [b"x", None, True], "b": 1})
    assert canonical.unpack(canonical.pack({"b": 1, "a": 2})) == {"a": 2, "b": 1}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(msgpack.packb({"b": 1, "a": 2}), id="unsorted-keys"),
        pytest.param(b"\x82\xa1a\x01\xa1a\x02", id="duplicate-keys"),
        pytest.param(msgpack.packb(1.5), id="float"),
        pytest.param(msgpack.packb(1) + b"\x00", id="trailing-data"),
        pytest.param(b"\xcc\x05", id="wide-integer"),
        pytest.param(b"\xd9\x01a", id="wide-string-header"),
        pytest.param(msgpack.packb(msgpack.ExtType(1, b"x")), id="extension-type"),
        pytest.param(b"\x81\x01\x02", id="integer-key"),
        pytest.param(b"\x92\x01", id="truncated"),
        pytest.param(b"\xc1", id="reserved-byte"),
    ],
)
def test_anything_but_the_canonical_bytes_is_rejected(data: bytes) -> None:
    with pytest.raises(EncodingError):
        canonical.unpack(data)


@pytest.mark.parametrize("value", [1.0, (1, 2), {1: 2}, 1 << 64, object()])
def test_values_without_a_canonical_form_cannot_be_packed(value: object) -> None:
    with pytest.raises(EncodingError):
        canonical.pack(value)


def test_entry_round_trips_through_its_bytes(samples, identity: Identity) -> None:
    for entry in (
        samples.load(3),
        samples.serve(identity, Identity.generate(), "s", (0, 4)),
        samples.serve(identity, None, "u", (1, 2)),
    ):
        data = entries.encode(5, entry)
        assert entries.decode(data) == (5, entry)
        assert entries.encode(5, entries.decode(data)[1]) == data


def _wire(entry: entries.Entry, **changes: object) -> bytes:
    wire = {"kind": entry.kind, "index": 1, **entry.to_wire(), **changes}
    return canonical.pack({k: v for k, v in wire.items() if v is not ...})


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"kind": "teleport"}, id="unknown-kind"),
        pytest.param({"index": -1}, id="negative-index"),
        pytest.param({"blocks": [3, 3]}, id="empty-block-range"),
        pytest.param({"blocks": [1, 2, 3]}, id="three-element-blocks"),
        pytest.param({"manifest_root": b"short"}, id="short-digest"),
        pytest.param({"time_ns": "yesterday"}, id="string-time"),
        pytest.param({"time_ns": True}, id="bool-as-int"),
        pytest.param({"device": ""}, id="empty-text"),
        pytest.param({"extra": 1}, id="unknown-field"),
        pytest.param({"dtype": ...}, id="missing-field"),
    ],
)
def test_entries_with_wrong_fields_are_rejected(samples, changes: dict) -> None:
    with pytest.raises(EncodingError):
        entries.decode(_wire(samples.load(), **changes))


def test_invalid_entries_cannot_be_built(samples) -> None:
    with pytest.raises(EncodingError, match="blocks"):
        dataclasses.replace(samples.load(), blocks=(5, 2))
    with pytest.raises(EncodingError, match="payload"):
        EvidenceEntry(payload={"score": 0.5}, time_ns=1)
    with pytest.raises(EncodingError, match="client"):
        dataclasses.replace(samples.serve(Identity.generate(), None, "s", (0, 1)), client="QmNotEd25519")


def test_evidence_payload_is_an_opaque_canonical_map() -> None:
    entry = EvidenceEntry(payload={"attestations": [b"sig"], "verdict": "mismatch"}, time_ns=1)
    assert entries.decode(entries.encode(9, entry)) == (9, entry)


def test_entry_signature_verifies_from_the_peer_id_alone(samples, identity: Identity) -> None:
    data = entries.encode(1, samples.load())
    signature = entries.sign(identity, data)
    entries.verify_signature(identity.peer_id, data, signature)
    with pytest.raises(Exception, match="not signed"):
        entries.verify_signature(Identity.generate().peer_id, data, signature)


def test_only_entry_zero_may_certify_log_keys(samples, identity: Identity) -> None:
    keys = LogKeyEntry(log_key=bytes(32), witness_key=bytes(32), time_ns=1)
    entries.check_in_log(0, keys, identity.peer_id, None)
    with pytest.raises(EncodingError):
        entries.check_in_log(3, keys, identity.peer_id, keys)
    with pytest.raises(EncodingError):
        entries.check_in_log(0, samples.load(), identity.peer_id, None)


def test_receipt_is_signed_by_the_client_and_checked_against_the_session(samples, identity: Identity) -> None:
    client = Identity.generate()
    entry = samples.serve(identity, client, "s1", (0, 4))
    verify_receipt(entry.receipt)
    entries.check_in_log(1, entry, identity.peer_id, None)
    forged = dataclasses.replace(entry.receipt, tokens=8)
    with pytest.raises(ReceiptError, match="not signed"):
        verify_receipt(forged)
    with pytest.raises(ReceiptError, match="does not match"):
        entries.check_in_log(1, dataclasses.replace(entry, tokens=8), identity.peer_id, None)
    with pytest.raises(ReceiptError, match="does not match"):
        entries.check_in_log(1, entry, Identity.generate().peer_id, None)


def test_unreceipted_session_is_valid(samples, identity: Identity) -> None:
    entry = samples.serve(identity, None, "lost-client", (0, 4))
    assert entry.receipt is None and entry.manifest_root == samples.ROOT
    entries.check_in_log(1, entry, identity.peer_id, None)
