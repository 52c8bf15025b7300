"""The attacks of issue 11, one by one: each hostile value is refused where it arrives, as its
parser's typed error (or a counted drop), and honest values still pass."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ledger import bounds, canonical, entries, note
from ledger.errors import EncodingError, NoteError, ReceiptError
from ledger.receipts import open_receipt
from routing import untrusted
from routing.evidence import Evidence, EvidenceError, check_signatures
from routing.planner import plan_route
from routing.records import DTYPES, STATES, ServerRecord
from routing.wire import WIRE_DTYPES

from . import valid

N = valid.NUM_BLOCKS


def _parse(value: Any, block: int = 10, peer: Any = valid.NODE.peer_id) -> ServerRecord | None:
    return ServerRecord.from_value(peer, value, num_blocks=N, block=block)


def _with(**changes: Any) -> dict[str, Any]:
    value = valid.record().to_value()
    for key, v in changes.items():
        if v is ...:
            del value[key]
        else:
            value[key] = v
    return value


# ---- records ---------------------------------------------------------------------------------------

def test_an_honest_record_round_trips_with_every_field() -> None:
    record = valid.record()
    assert _parse(record.to_value()) == record
    assert _parse(record.to_value(), block=19) == record


def test_a_record_of_an_older_node_parses_with_the_new_fields_at_their_defaults() -> None:
    parsed = _parse(_with(rtt_ms=..., scheme=..., weights_root=..., extra=..., maddrs=..., name=...,
                          batch_throughput=..., batch_size=...))
    assert parsed is not None and (parsed.rtt_ms, parsed.scheme, parsed.weights_root, parsed.extra) == ({}, "", "", {})
    assert (parsed.batch_throughput, parsed.batch_size) == (0.0, 1)


def test_unknown_fields_are_ignored_so_newer_nodes_can_add_some() -> None:
    assert _parse(_with(future_field=[1, 2])) == valid.record()


@pytest.mark.parametrize("changes", [
    pytest.param({"active_sessions": "x"}, id="issue-11-non-numeric-sessions"),
    pytest.param({"start": 0.5}, id="issue-11-fractional-start"),
    pytest.param({"start": True}, id="bool-is-not-an-int"),
    pytest.param({"start": 20}, id="empty-span"),
    pytest.param({"start": 15, "end": 12}, id="reversed-span"),
    pytest.param({"end": 31}, id="past-the-model"),
    pytest.param({"start": -1}, id="negative-start"),
    pytest.param({"throughput": math.nan}, id="nan-throughput"),
    pytest.param({"throughput": math.inf}, id="infinite-throughput"),
    pytest.param({"throughput": 0.0}, id="zero-throughput"),
    pytest.param({"throughput": -3.0}, id="negative-throughput"),
    pytest.param({"throughput": 1e12}, id="absurd-throughput"),
    pytest.param({"throughput": "fast"}, id="text-throughput"),
    pytest.param({"batch_throughput": math.inf}, id="infinite-batch-throughput"),
    pytest.param({"batch_throughput": -1.0}, id="negative-batch-throughput"),
    pytest.param({"batch_throughput": 1e12}, id="absurd-batch-throughput"),
    pytest.param({"batch_size": 0}, id="zero-batch"),
    pytest.param({"batch_size": 2.5}, id="fractional-batch"),
    pytest.param({"state": "sleeping"}, id="unknown-state"),
    pytest.param({"dtype": "float64"}, id="unknown-dtype"),
    pytest.param({"device": ""}, id="empty-device"),
    pytest.param({"device": "x" * 33}, id="long-device"),
    pytest.param({"name": "n" * 65}, id="long-name"),
    pytest.param({"name": "bell\a"}, id="control-character-in-name"),
    pytest.param({"cache_tokens_left": -1}, id="negative-cache"),
    pytest.param({"max_session_length": 1 << 50}, id="huge-session-length"),
    pytest.param({"max_step_tokens": 0}, id="zero-step-tokens"),
    pytest.param({"max_session_length": 0}, id="zero-session-length"),
    pytest.param({"version": 1.0}, id="float-version"),
    pytest.param({"maddrs": ["garbage"]}, id="maddr-that-does-not-parse"),
    pytest.param({"maddrs": "/ip4/1.2.3.4/tcp/1"}, id="maddrs-not-a-list"),
    pytest.param({"maddrs": ["/ip4/1.2.3.4/tcp/1"] * 17}, id="too-many-maddrs"),
    pytest.param({"rtt_ms": {"not-a-peer": 1.0}}, id="rtt-key-not-a-peer-id"),
    pytest.param({"rtt_ms": {valid.CHECKER.peer_id: -1.0}}, id="negative-rtt"),
    pytest.param({"rtt_ms": {valid.CHECKER.peer_id: 60_001}}, id="rtt-over-a-minute"),
    pytest.param({"rtt_ms": {valid.CHECKER.peer_id: math.nan}}, id="nan-rtt"),
    pytest.param({"rtt_ms": {valid.CHECKER.peer_id: True}}, id="bool-rtt"),
    pytest.param({"extra": {"checkpoint": 5}}, id="checkpoint-not-text"),
    pytest.param({"extra": {"checkpoint": "c" * 65537}}, id="checkpoint-too-long"),
    pytest.param({"extra": {"nested": {"a": 1}}}, id="extra-not-shallow"),
    pytest.param({"extra": {f"k{i}": i for i in range(9)}}, id="extra-too-big"),
    pytest.param({"scheme": "INT8; drop table"}, id="scheme-not-a-name"),
    pytest.param({"weights_root": "AB" * 32}, id="weights-root-not-lowercase-hex"),
    pytest.param({"weights_root": "ab" * 31}, id="weights-root-too-short"),
    pytest.param({"moving_to": 25}, id="move-past-the-model"),
    pytest.param({"moving_to": "8"}, id="move-target-not-an-int"),
    pytest.param({"state": ...}, id="required-field-missing"),
    pytest.param({"extra": {"deep": valid.deep_value(1000)}}, id="deep-value"),
])
def test_a_hostile_record_is_dropped_and_counted(changes: dict[str, Any]) -> None:
    before = untrusted.snapshot()["record"]
    assert _parse(_with(**changes)) is None
    assert untrusted.snapshot()["record"] == before + 1


def test_a_record_found_under_a_block_it_does_not_cover_is_dropped() -> None:
    value = valid.record().to_value()  # blocks 10:20
    assert _parse(value, block=9) is None and _parse(value, block=20) is None


@pytest.mark.parametrize("peer", ["not-a-peer", 5, ("a",), None])
def test_a_record_under_a_subkey_that_is_not_a_peer_id_is_dropped(peer: Any) -> None:
    assert _parse(valid.record().to_value(), peer=peer) is None


@pytest.mark.parametrize("value", [None, [], "x", 7, valid.deep_value(5000)])
def test_a_record_that_is_not_a_map_is_dropped(value: Any) -> None:
    assert _parse(value) is None


def test_records_name_the_dtypes_the_wire_carries() -> None:
    assert set(DTYPES) == set(WIRE_DTYPES) and "online" in STATES


def test_the_planner_gets_only_records_it_can_plan_with() -> None:
    """Issue 11: a non-numeric or fractional field used to reach the planner and crash every client."""
    honest = [valid.record(peer_id=p.peer_id, start=a, end=b, rtt_ms={})
              for p, (a, b) in ((valid.NODE, (0, 15)), (valid.CHECKER, (15, 30)))]
    hostile = [_with(active_sessions="x", start=0, end=30), _with(start=0.5, end=30)]
    parsed = [_parse(r.to_value(), block=r.start, peer=r.peer_id) for r in honest]
    parsed += [_parse(v, block=0, peer=valid.CLIENT.peer_id) for v in hostile]
    records = [r for r in parsed if r is not None]
    assert records == honest
    hops = plan_route(records, 0, N, rtt={valid.NODE.peer_id: 0.01, valid.CHECKER.peer_id: 0.01})
    assert [(h.start, h.end) for h in hops] == [(0, 15), (15, 30)]


# ---- the shared guard, canonical msgpack and entries ----------------------------------------------

def test_the_guard_walks_without_recursion_and_names_the_limit() -> None:
    limits = bounds.Bounds(depth=4, items=10, size=8, string=5)
    bounds.check({"a": [1, 2.5, None, b"xyz"]}, limits)
    for value, what in ((valid.deep_value(100_000), "deeper"), (list(range(11)), "items"),
                        (["abc", "def", "ghi"], "in all"), ("toolong", "string"), ({1: object()}, "object")):
        with pytest.raises(EncodingError, match=what):
            bounds.check(value, limits)


def test_a_document_nested_1000_deep_is_an_encoding_error_not_a_recursion_error() -> None:
    """Issue 11: 1 KB of msgpack nested 1000 deep raised RecursionError at connect."""
    for depth in (33, 1000, 1023, 1024, 5000):
        with pytest.raises(EncodingError):
            canonical.unpack(valid.deep_list_bytes(depth))
    with pytest.raises(EncodingError, match="nest"):
        canonical.pack(valid.deep_value(1000))
    assert canonical.unpack(canonical.pack(valid.deep_value(32))) == valid.deep_value(32)


def test_an_entry_with_an_unhashable_kind_is_an_encoding_error() -> None:
    with pytest.raises(EncodingError):
        entries.decode(canonical.pack({"kind": [], "index": 0}))


# ---- evidence ------------------------------------------------------------------------------------

def test_honest_evidence_parses_and_checks() -> None:
    evidence = valid.evidence()
    parsed = Evidence.from_bytes(evidence.to_bytes())
    check_signatures(parsed)
    assert parsed.to_bytes() == evidence.to_bytes()


def _evidence_with(**changes: Any) -> bytes:
    wire = canonical.unpack(valid.evidence().to_bytes())
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = wire
        for key in parents:
            target = target[key]
        target[last] = value
    return canonical.pack(wire)


@pytest.mark.parametrize("data", [
    pytest.param(valid.deep_list_bytes(1000), id="issue-11-nested-1000-deep"),
    pytest.param(_evidence_with(errors_ppm=valid.deep_value(30)), id="deep-field"),
    pytest.param(_evidence_with(blocks=[3]), id="one-element-blocks"),
    pytest.param(_evidence_with(start=-1), id="negative-start"),
    pytest.param(_evidence_with(method="vote"), id="unknown-method"),
    pytest.param(_evidence_with(publisher="me"), id="publisher-not-a-peer-id"),
    pytest.param(_evidence_with(errors_ppm={"x": 1}), id="errors-key-not-a-peer-id"),
    pytest.param(_evidence_with(errors_ppm={valid.NODE.peer_id: -1}), id="negative-error"),
    pytest.param(_evidence_with(prefix__dtype="int8"), id="unknown-dtype"),
    pytest.param(_evidence_with(prefix__shape=[1, 3, 1 << 20]), id="absurd-hidden-size"),
    pytest.param(_evidence_with(prefix__shape=[1, 3]), id="two-dimensional-tensor"),
    pytest.param(_evidence_with(prefix__data=b"\0" * 8), id="data-shorter-than-its-shape"),
    pytest.param(_evidence_with(step__output__shape=[1025, 1, 4]), id="batch-over-the-limit"),
    pytest.param(_evidence_with(start=1), id="prefix-does-not-end-at-the-step"),
    pytest.param(_evidence_with(step__attestation__node=5), id="attestation-field-mistyped"),
    pytest.param(_evidence_with(step__extra=1), id="claim-with-an-unknown-field"),
    pytest.param(_evidence_with(signature=b"short"), id="short-signature"),
    pytest.param(b"\x81\xa6format\xb2swarmlm-evidence/1", id="missing-fields"),
    pytest.param(b"", id="empty"),
])
def test_hostile_evidence_is_an_evidence_error(data: bytes) -> None:
    with pytest.raises(EvidenceError):
        Evidence.from_bytes(data)


def test_an_unreadable_evidence_file_is_an_evidence_error(tmp_path) -> None:
    with pytest.raises(EvidenceError, match="cannot read"):
        Evidence.load(tmp_path)


# ---- receipts and notes --------------------------------------------------------------------------

@pytest.mark.parametrize("data", [valid.deep_list_bytes(1000), b"\x90", 5, None,
                                  canonical.pack({**valid.receipt().to_wire(), "tokens": -1})])
def test_a_hostile_receipt_is_a_receipt_error(data: Any) -> None:
    """Issue 11: the deep receipt at session close made the node answer `internal` and skip the entry."""
    with pytest.raises(ReceiptError):
        open_receipt(data)


def test_a_receipt_signed_by_someone_else_is_a_receipt_error() -> None:
    wire = valid.receipt().to_wire()
    wire["client"] = valid.CHECKER.peer_id
    with pytest.raises(ReceiptError, match="not signed"):
        open_receipt(canonical.pack(wire))


def test_an_honest_receipt_opens() -> None:
    receipt = valid.receipt()
    assert open_receipt(canonical.pack(receipt.to_wire())) == receipt


def test_a_checkpoint_with_a_5000_digit_size_is_a_note_error() -> None:
    with pytest.raises(NoteError, match="out of range"):
        note.parse_decimal("1" * 5000, "tree size")
    with pytest.raises(NoteError):
        note.parse(12345)  # type: ignore[arg-type]
