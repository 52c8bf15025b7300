"""The declared frames: each survives a round trip, each field is checked and named when wrong,
unknown fields are ignored (a newer peer may send more), and opening frames check the version first."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from routing import protocol, wire
from routing.errors import ErrorCode, PeerFailure, ProtocolError, RemoteError

TENSOR = wire.encode_tensor(torch.zeros(1, 2, 4))
MADDR = "/ip4/127.0.0.1/tcp/4000/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"

EXAMPLES: list[protocol.Frame] = [
    protocol.Info(),
    protocol.InfoReply(1, "12D3KooW", "ab" * 32, 0, 10),
    protocol.Forward("ab" * 32, TENSOR, blocks=(0, 10), reply_dtype="float32", last=1, attest=False),
    protocol.Open("ab" * 32, "s-1", 64, batch=2, blocks=(3, 7), reply_dtype="bfloat16", attest=True,
                  grant={"opaque": b"signed"}, next_maddrs=[MADDR], tickets=True),
    protocol.PushOpen(),
    protocol.LedgerRequest("entries", start=0, end=5),
    protocol.LedgerReply(size=3, checkpoint="a note", entries=[[b"entry", bytes(64)]], proof=[bytes(32)],
                         entry=[b"entry", bytes(64)]),
    protocol.Step("s-1", 3, TENSOR, push=True, ticket={"opaque": b"signed"}),
    protocol.Route("s-1", {"opaque": b"signed"}, [MADDR]),
    protocol.Close("s-1", b"receipt", 8),
    protocol.Opened("s-1", 64, "float16"),
    protocol.Result(TENSOR, step=4, start=2, compute_ms=1.5, attestation={"any": 1}, pushed=True,
                    push_failed="no route", ring=9, token=42, kept=2, drafts=[5, 6]),
    protocol.Ring("s-1", {"opaque": b"signed"}, 0.7, 0.9, 40, 0.05, b"state", [2], 4, [1, 2, 3]),
    protocol.Routed("s-1"),
    protocol.Closed("s-1", 12, 10),
    protocol.PushFailed("s-1", "push_refused", "not its predecessor", start=3),
    protocol.Error("busy", "retry later", client="12D3KooW", session="s-1", start=3),
    protocol.Push("12D3KooW", "s-1", 3, TENSOR, (0, 10), {"opaque": b"signed"}),
    protocol.Push("12D3KooW", "s-1", 3, TENSOR, (0, 10), ring_ticket={"opaque": b"signed"}),
    protocol.RingToken("12D3KooW", "s-1", 9, 42, (20, 30), {"opaque": b"signed"}, [7, 8]),
    protocol.Ping(7),
    protocol.Pong(7),
    protocol.Dialback([4001, 4002]),
    protocol.DialedBack("11.77.0.5", [4001]),
]

# A wrong value for each checked field (fields of ANY are checked by their own parsers).
WRONG: dict[str, list[Any]] = {
    "root": [7, "x" * 129], "hidden": [b"raw", [1, 2]], "blocks": [[3, 3], [-1, 2], [1, 2, 3], [1.0, 2], "0:10"],
    "reply_dtype": ["int8", ["float32"]], "dtype": ["float64", 1], "last": [0, True, 1.5],
    "attest": [1, "yes"], "push": [1], "pushed": [0], "session": ["", "x" * 65, "a\nb", 5],
    "max_length": [0, -1, 1 << 63, "8"], "batch": [0, True], "next_maddrs": [["not an address"], [MADDR] * 9, MADDR],
    "start": [-1, 1 << 63, 1.0], "length": [-1, "3"], "step": [-1], "compute_ms": [-1, 1e10, "3"],
    "push_failed": ["x" * 4097], "tokens": [-1], "accepted_tokens": [None], "code": [5, "c" * 41],
    "message": [b"bytes"], "client": [7, "c" * 257], "id": [-1, "7"], "op": [None, "o" * 41, ["checkpoint"]],
    "end": [-1, 1 << 64], "size1": [True], "size2": [2.0], "index": ["0"], "size": [[1]],
    "tickets": [1, "yes"], "ports": [[0], [65536], ["80"], [1, 2, 3, 4, 5], 80], "ip": [7, "x" * 65],
    "open": [[0], 4001], "v": [-1, "1", None], "peer_id": [7, "p" * 257],
    "ring": [-1, "3"], "token": [-1, 1 << 31, "3"], "temperature": [-0.1, 101, "1"],
    "top_p": [1.5, -0.1], "top_k": [-1, 0.5], "min_p": [2], "state": ["s", b"x" * 8193], "stop": [[-1], [1] * 17, 3],
    "kept": [-1, "1"], "drafts": [[-1], [1] * 17, 3], "max_draft": [-1, 17, True], "context": [[-1], [1] * 4097, "1"],
    "checkpoint": ["", b"note"], "entries": [[[b"entry"]], [[b"entry", bytes(63)]], [[b"e", bytes(64)]] * 1001],
    "proof": [[bytes(31)], [bytes(32)] * 129, bytes(32)], "entry": [[b"entry"], ["entry", bytes(64)]],
}
ANY_FIELDS = {"grant", "receipt", "attestation", "ticket", "ring_ticket"}


def _name(frame: protocol.Frame) -> str:
    return type(frame).__name__


def _refused(frame: dict[str, Any], cls: type[protocol.Frame], code: ErrorCode = ErrorCode.BAD_FRAME) -> str:
    with pytest.raises(ProtocolError) as e:
        protocol.opening(frame, cls) if cls.OPENS else cls.parse(frame)
    assert e.value.code == code, e.value
    return str(e.value)


@pytest.mark.parametrize("frame", EXAMPLES, ids=_name)
def test_every_frame_survives_a_round_trip_through_msgpack(frame: protocol.Frame) -> None:
    sent = wire.unpack_frame(wire.pack_frame(frame.to_wire())[4:])
    assert sent["type"] == frame.TYPE and ("v" in sent) == (frame.OPENS is not None or hasattr(frame, "v"))
    assert (protocol.opening(sent, type(frame)) if frame.OPENS else type(frame).parse(sent)) == frame


@pytest.mark.parametrize("frame", EXAMPLES, ids=_name)
def test_unknown_fields_from_a_newer_peer_are_ignored(frame: protocol.Frame) -> None:
    newer = {**frame.to_wire(), "hint": {"from": "v2"}, "priority": 3}
    assert type(frame).read(newer) == frame


@pytest.mark.parametrize("frame", EXAMPLES, ids=_name)
def test_a_missing_required_field_is_a_bad_frame_naming_it(frame: protocol.Frame) -> None:
    for f in dataclasses.fields(frame):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            wire_form = frame.to_wire()
            del wire_form[f.name]
            assert f.name in _refused(wire_form, type(frame))


@pytest.mark.parametrize("frame", EXAMPLES, ids=_name)
def test_a_mistyped_or_out_of_range_field_is_a_bad_frame_naming_it(frame: protocol.Frame) -> None:
    for f in dataclasses.fields(frame):
        if f.name in ANY_FIELDS or "type" not in f.metadata:  # not carried: InfoReply.raw
            continue
        assert WRONG[f.name], f.name
        for value in WRONG[f.name]:
            assert f.name in _refused({**frame.to_wire(), f.name: value}, type(frame)), (f.name, value)


def test_absent_optional_fields_take_their_defaults() -> None:
    step = protocol.Step.parse({"type": "step", "session": "s", "start": 0, "hidden": TENSOR})
    assert step.push is False
    opened = protocol.opening({"type": "open", "v": 1, "root": "r", "session": "s", "max_length": 4}, protocol.Open)
    assert (opened.batch, opened.attest, opened.blocks, opened.reply_dtype, opened.grant, opened.next_maddrs) == \
        (1, True, None, None, None, [])


def test_an_info_reply_keeps_the_whole_map_for_status_pages() -> None:
    """The declared fields are what a client routes by; the rest is read by `swarm status` and such."""
    sent = {**protocol.InfoReply(1, "12D3KooW", "ab" * 32, 0, 10).to_wire(), "load": {"sessions": 2}}
    reply = protocol.InfoReply.parse(sent)
    assert (reply.root, reply.v, reply.raw["load"]) == ("ab" * 32, 1, {"sessions": 2})
    assert "raw" not in reply.to_wire()


def test_optional_fields_an_older_peer_sends_as_nil_are_absent() -> None:
    close = protocol.Close.parse({"type": "close", "session": "s", "receipt": None, "length": None})
    assert close == protocol.Close("s")
    assert "receipt" not in close.to_wire()


def test_a_step_id_from_an_older_client_is_ignored() -> None:
    """Nodes number steps themselves (and sign the number into attestations)."""
    old = {"type": "step", "session": "s", "step": 0, "start": 4, "hidden": TENSOR}
    assert protocol.Step.parse(old) == protocol.Step("s", 4, TENSOR)
    assert "step" not in protocol.Step("s", 4, TENSOR).to_wire()


@pytest.mark.parametrize("version", [None, True, 1.0, 2, 0, "1", [1]])
def test_an_opening_frame_of_another_version_is_refused_before_its_fields(version: Any) -> None:
    frame = {"type": "open", "root": 5} if version is None else {"type": "open", "v": version, "root": 5}
    _refused(frame, protocol.Open, ErrorCode.VERSION)


def test_an_opening_frame_of_the_wrong_type_is_a_bad_frame() -> None:
    assert "expected a 'forward' frame" in _refused(protocol.Info().to_wire(), protocol.Forward)


def test_a_session_frame_of_an_unknown_type_is_a_bad_frame() -> None:
    for kind in ("dance", None, 7, "x" * 10_000):
        with pytest.raises(ProtocolError) as e:
            protocol.one_of({"type": kind, "session": "s"}, protocol.SESSION_FRAMES, "in a session")
        assert e.value.code == ErrorCode.BAD_FRAME and len(str(e.value)) < 200
    assert protocol.one_of(protocol.Close("s").to_wire(), protocol.SESSION_FRAMES, "in a session") == \
        protocol.Close("s")


def test_error_messages_never_repeat_a_whole_untrusted_value() -> None:
    message = _refused({**EXAMPLES[5].to_wire(), "session": [[[0] * 1000]] * 1000}, protocol.Step)
    assert len(message) < 200


def test_an_error_frame_is_read_leniently_and_cut_to_size() -> None:
    error = protocol.Error.lenient({"type": "error", "code": "c" * 100, "message": "m" * 10_000, "session": 5})
    assert (len(error.code), len(error.message), error.session, error.client) == (40, 500, None, None)
    assert protocol.Error.lenient({"type": "error"}) == protocol.Error("?", "")
    assert protocol.Error.lenient({"type": "error", "start": -1}).start is None  # a refused push's step: or none
    assert protocol.Error.lenient({"type": "error", "start": 7}).start == 7
    remote = protocol.Error("busy", "later").remote("12D3KooWpeer")
    assert isinstance(remote, RemoteError) and (remote.code, remote.remote_message) == ("busy", "later")
    assert protocol.Error.of(ProtocolError(ErrorCode.TIMEOUT, "slow")) == protocol.Error("timeout", "slow")


def test_a_ledger_request_names_the_field_its_op_needs() -> None:
    request = protocol.LedgerRequest("inclusion", index=3)
    assert request.bounded("index", 0) == 3
    with pytest.raises(ProtocolError, match="'size'"):
        request.bounded("size", 4)
    with pytest.raises(ProtocolError, match="'index' must be in 4"):
        request.bounded("index", 4)


def test_every_handler_is_declared_once() -> None:
    opening = {cls.OPENS for cls in _frames() if cls.OPENS}
    assert opening == {protocol.INFO, protocol.FORWARD, protocol.INFERENCE, protocol.PUSH, protocol.LEDGER,
                       protocol.DIALBACK}
    assert set(protocol.REPLY_TYPES) <= opening
    # the replies to a dial-back, an info and a ledger request keep their request's type, as they always had
    replies = (protocol.DialedBack, protocol.InfoReply, protocol.LedgerReply)
    types = [cls.TYPE for cls in _frames() if cls not in replies]
    assert len(types) == len(set(types)), types
    assert {type(f) for f in EXAMPLES} == set(_frames())


def _frames() -> list[type[protocol.Frame]]:
    found, todo = [], [protocol.Frame]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if "TYPE" in vars(sub):
                found.append(sub)
    return found


def test_a_reply_of_another_type_is_a_peer_failure_and_an_error_a_remote_error() -> None:
    protocol.check_reply("12D3KooWpeer", protocol.Routed("s").to_wire(), "routed")
    with pytest.raises(PeerFailure, match="expected a 'result' frame"):
        protocol.check_reply("12D3KooWpeer", protocol.Routed("s").to_wire(), "result")
    with pytest.raises(RemoteError) as e:
        protocol.check_reply("12D3KooWpeer", protocol.Error("busy", "later").to_wire(), "result")
    assert e.value.code == "busy"


VALUES = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=70)
                      | st.binary(max_size=8), lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
FIELDS = sorted({f.name for frame in EXAMPLES for f in dataclasses.fields(frame)} | {"v", "type"})


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.sampled_from(_frames()), st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8))
def test_any_map_parses_or_is_refused_with_a_typed_code(cls: type[protocol.Frame], fields: dict[str, Any]) -> None:
    frame = {**fields, "type": cls.TYPE}
    try:
        protocol.opening(frame, cls) if cls.OPENS else cls.parse(frame)
    except ProtocolError as e:
        assert e.code in (ErrorCode.BAD_FRAME, ErrorCode.VERSION) and len(str(e)) < 300
