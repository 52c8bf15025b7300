"""Every parser of untrusted input, fed random and structure-aware mutated inputs, lets only its
documented error escape (or returns its documented None): never TypeError, KeyError, ValueError,
OverflowError or RecursionError."""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Callable
from typing import Any

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import canonical, entries, note
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.errors import EncodingError, LedgerError, NoteError, ReceiptError
from ledger.receipts import Receipt, open_receipt
from ledger.store import Ledger, Store
from routing import ledger_rpc
from routing.attestation import Attestation, parse_attestation
from routing.errors import PeerFailure
from routing.evidence import Evidence, EvidenceError
from routing.records import ServerRecord

from . import valid

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

INTS = st.one_of(st.integers(-(1 << 63), (1 << 64) - 1),
                 st.sampled_from([0, 1, -1, 2, 29, 30, 31, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -(1 << 63)]))
LEAVES = st.one_of(st.none(), st.booleans(), INTS, st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=30), st.binary(max_size=40))
VALUES = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                      max_leaves=12)
DEPTHS = st.one_of(st.sampled_from([33, 500, 999, 1000, 1023, 1024, 3000]), st.integers(30, 3000))
HOSTILE = st.one_of(VALUES, DEPTHS.map(valid.deep_value))
PACKABLE = st.one_of(VALUES, st.integers(30, 500).map(valid.deep_value))  # msgpack packs at most 511 deep


def _paths(value: Any) -> list[tuple[Any, ...]]:
    """Every place in a decoded document: map keys and list indices, found without recursion."""
    found, stack = [], [((), value)]
    while stack:
        path, v = stack.pop()
        children = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for key, child in children:
            found.append((*path, key))
            stack.append(((*path, key), child))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any, values: st.SearchStrategy[Any] = HOSTILE) -> Any:
    """`document` with one place replaced by a hostile value, deleted, or given an unknown sibling."""
    paths = _paths(document)
    top = [p for p in paths if len(p) == 1]  # half the time a top-level field: where the schema starts
    path = draw(st.sampled_from(top if top and draw(st.booleans()) else paths))
    mutant = copy.deepcopy(document)
    parent = mutant
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = draw(values)
    else:
        parent[path[-1]] = draw(values)
    return mutant


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` truncated, with bytes flipped, or with random bytes spliced in."""
    at = draw(st.integers(0, len(data)))
    action = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if action == "truncate":
        return data[:at]
    if action == "flip" and at < len(data):
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


def _bytes_attacks(document: Any) -> st.SearchStrategy[bytes]:
    data = canonical.pack(document)
    return st.one_of(st.binary(max_size=200), corrupted(data),
                     mutated(document, PACKABLE).map(valid.canonical_or_msgpack), DEPTHS.map(valid.deep_list_bytes))


def _parsed_or(error: type[Exception], parse: Callable[..., Any], *args: Any) -> Any:
    """`parse(*args)`, or None if it raised `error`: any other exception fails the test."""
    try:
        return parse(*args)
    except error:
        return None


# ---- ledger --------------------------------------------------------------------------------------

SERVE = canonical.unpack(valid.serve_entry_bytes())
RECEIPT = valid.receipt().to_wire()


@FUZZ
@given(_bytes_attacks(SERVE))
def test_canonical_unpack_raises_only_encoding_error(data: bytes) -> None:
    _parsed_or(EncodingError, canonical.unpack, data)


@FUZZ
@given(_bytes_attacks(SERVE))
def test_entry_decode_raises_only_ledger_errors(data: bytes) -> None:
    _parsed_or(LedgerError, entries.decode, data)


@FUZZ
@given(_bytes_attacks(RECEIPT))
def test_a_receipt_from_a_peer_is_a_receipt_or_a_receipt_error(data: bytes) -> None:
    assert isinstance(_parsed_or(ReceiptError, open_receipt, data), (Receipt, type(None)))


NOTE = valid.checkpoint_note()


@st.composite
def mutated_notes(draw: st.DrawFn) -> str:
    """The checkpoint note with one line replaced, or text spliced in at any place."""
    lines = NOTE.split("\n")
    if draw(st.booleans()):
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = draw(st.one_of(st.text(max_size=40), st.text("0123456789", min_size=1, max_size=5000),
                                  st.sampled_from(["", "— ", "\u2014 a b c", "swarmlm/", "AAAA", "1" * 5000])))
        return "\n".join(lines)
    at = draw(st.integers(0, len(NOTE)))
    return NOTE[:at] + draw(st.text(min_size=1, max_size=10)) + NOTE[at:]


NOTES = st.one_of(mutated_notes(), st.text(max_size=200), st.binary(max_size=200),
                  mutated_notes().map(lambda s: s.encode("utf-8", "surrogatepass")))


@FUZZ
@given(NOTES)
def test_notes_and_checkpoints_raise_only_note_errors(data: str | bytes) -> None:
    parsed = _parsed_or(NoteError, note.parse, data)
    if parsed is not None:
        _parsed_or(NoteError, Checkpoint.from_text, parsed.text)
    opened = _parsed_or(NoteError, open_checkpoint, data, valid.NODE.peer_id, valid.LOG_KEY)
    assert opened is None or opened[0].origin == f"swarmlm/{valid.NODE.peer_id}"


# ---- routing -------------------------------------------------------------------------------------

ATTESTATION = valid.attestation_wire()


@FUZZ
@given(st.one_of(HOSTILE, mutated(ATTESTATION)))
def test_a_malformed_attestation_parses_to_none(obj: Any) -> None:
    parsed = parse_attestation(obj)
    assert parsed is None or isinstance(parsed, Attestation)


RECORD = valid.record().to_value()


@FUZZ
@given(st.one_of(HOSTILE, mutated(RECORD)), st.integers(0, valid.NUM_BLOCKS - 1))
def test_a_record_parses_to_none_or_to_a_record_within_the_model(value: Any, block: int) -> None:
    record = ServerRecord.from_value(valid.NODE.peer_id, value, num_blocks=valid.NUM_BLOCKS, block=block)
    if record is not None:
        assert record.start <= block < record.end <= valid.NUM_BLOCKS
        assert math.isfinite(record.throughput) and record.throughput > 0
        assert all(type(v) is int and v >= 0 for v in (record.active_sessions, record.cache_tokens_left,
                                                       record.max_step_tokens, record.max_session_length))
        assert record.max_step_tokens >= 1 and record.max_session_length >= 1


EVIDENCE = canonical.unpack(valid.evidence().to_bytes())


@FUZZ
@given(_bytes_attacks(EVIDENCE))
def test_evidence_parses_or_raises_evidence_error_only(data: bytes) -> None:
    _parsed_or(EvidenceError, Evidence.from_bytes, data)


class _Peer:
    """A PeerLink stand-in whose every reply is the attacker's."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    async def request(self, peer: str, handler: str, frame: dict[str, Any]) -> Any:
        return self.reply


REPLIES = st.one_of(
    st.dictionaries(st.sampled_from(["size", "checkpoint", "entries", "proof"]), HOSTILE, max_size=4),
    mutated({"size": 3, "checkpoint": NOTE, "entries": [[b"e", bytes(64)]], "proof": [bytes(32)]}))


@FUZZ
@given(REPLIES)
def test_ledger_replies_are_used_or_refused_as_peer_failures(reply: dict[str, Any]) -> None:
    link, peer = _Peer(reply), valid.NODE.peer_id
    for call in (ledger_rpc.checkpoint(link, peer), ledger_rpc.entries(link, peer, 0, 1),
                 ledger_rpc.consistency(link, peer, 1, 3)):
        _parsed_or(PeerFailure, asyncio.run, call)


class _LedgerPeer:
    """A node's real log, served by a liar that claims `extra` more entries than its checkpoint signs."""

    def __init__(self, log: Ledger, extra: int) -> None:
        self.log, self.extra, self.entry_requests = log, extra, 0

    async def request(self, peer: str, handler: str, frame: dict[str, Any]) -> Any:
        if frame["op"] == "checkpoint":
            size, note = self.log.latest_checkpoint()
            return {"size": size + self.extra, "checkpoint": note}
        self.entry_requests += 1
        start, end = frame["start"], min(frame["end"], self.log.size())
        return {"entries": [[r.data, r.signature] for r in self.log.rows(start, end)]}


def test_an_audit_checks_the_signed_size_before_paging_through_a_claimed_one(tmp_path) -> None:
    with Store(tmp_path / "ledger.sqlite", valid.NODE) as log:
        honest, liar = _LedgerPeer(log, 0), _LedgerPeer(log, 10**12)
        assert asyncio.run(ledger_rpc.audit(honest, valid.NODE.peer_id))[0] == log.size()
        with pytest.raises(PeerFailure, match="signed size"):
            asyncio.run(ledger_rpc.audit(liar, valid.NODE.peer_id))
        assert liar.entry_requests == 1  # entry 0, for the log key; no page of the claimed log
