"""The `swarmlm.ledger` handler answers any hostile request with bad_frame (or too_large), never
`internal`; honest requests still get their entries and proofs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.keys import Identity
from ledger.store import Store
from node.ledger_service import LedgerService
from routing.errors import ErrorCode, ProtocolError

from . import valid

HUGE = (1 << 64) - 1


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerService]:
    store = Store(tmp_path_factory.mktemp("ledger") / "ledger.sqlite", Identity.generate())
    for i in range(4):
        store.append_sync(valid.load_entry(i))
    yield LedgerService(store, serving=None)  # type: ignore[arg-type]  # _answer needs only the ledger
    store.close()


def _refused(service: LedgerService, frame: dict[str, Any]) -> ErrorCode:
    with pytest.raises(ProtocolError) as refusal:
        service._answer(frame)
    return refusal.value.code


@pytest.mark.parametrize("frame", [
    pytest.param({"op": "entries", "start": HUGE, "end": HUGE}, id="issue-11-entries-2^64-1"),
    pytest.param({"op": "entries", "start": 0, "end": HUGE}, id="end-2^64-1"),
    pytest.param({"op": "entries", "start": (1 << 63) - 1, "end": (1 << 63) - 1}, id="start-at-the-sqlite-limit"),
    pytest.param({"op": "entries", "start": -1, "end": 2}, id="negative-start"),
    pytest.param({"op": "entries", "start": 3, "end": 3}, id="empty-range"),
    pytest.param({"op": "entries", "start": True, "end": 2}, id="bool-start"),
    pytest.param({"op": "entries", "start": 0.0, "end": 2}, id="float-start"),
    pytest.param({"op": "consistency", "size1": HUGE, "size2": HUGE}, id="consistency-2^64-1"),
    pytest.param({"op": "consistency", "size1": 2, "size2": 1}, id="consistency-backwards"),
    pytest.param({"op": "consistency", "size1": 0, "size2": 3}, id="consistency-from-zero"),
    pytest.param({"op": "consistency", "size1": 1, "size2": 99}, id="consistency-past-the-log"),
    pytest.param({"op": "inclusion", "index": HUGE, "size": HUGE}, id="inclusion-2^64-1"),
    pytest.param({"op": "inclusion", "index": 3, "size": 2}, id="index-outside-the-tree"),
    pytest.param({"op": "inclusion", "index": 99, "size": 100}, id="index-past-the-log"),
    pytest.param({"op": "inclusion", "index": "0", "size": 2}, id="text-index"),
    pytest.param({"op": valid.deep_value(5000)}, id="deep-op"),
    pytest.param({"op": "truncate"}, id="unknown-op"),
    pytest.param({}, id="no-op"),
])
def test_a_hostile_ledger_request_is_a_bad_frame(service: LedgerService, frame: dict[str, Any]) -> None:
    assert _refused(service, {"type": "ledger", **frame}) == ErrorCode.BAD_FRAME


def test_too_many_entries_at_once_is_too_large(service: LedgerService) -> None:
    assert _refused(service, {"type": "ledger", "op": "entries", "start": 0, "end": 5000}) == ErrorCode.TOO_LARGE


def test_honest_requests_are_answered(service: LedgerService) -> None:
    ask = service._answer
    assert ask({"op": "checkpoint"})["size"] == 5
    assert len(ask({"op": "entries", "start": 1, "end": 5})["entries"]) == 4
    assert ask({"op": "consistency", "size1": 2, "size2": 5})["proof"]
    assert ask({"op": "inclusion", "index": 3, "size": 5})["entry"][0] == service.ledger.row(3).data


FIELD = st.one_of(st.integers(-(1 << 63), HUGE), st.sampled_from([0, 1, 4, 5, HUGE, (1 << 63) - 1, 1 << 63]),
                  st.none(), st.booleans(), st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
FRAMES = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(["checkpoint", "entries", "consistency", "inclusion"]), FIELD)},
    optional={name: FIELD for name in ("start", "end", "size1", "size2", "index", "size")})


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(FRAMES)
def test_any_request_is_answered_or_refused_with_a_typed_code(service: LedgerService, frame: dict[str, Any]) -> None:
    try:
        assert isinstance(service._answer({"type": "ledger", **frame}), dict)
    except ProtocolError as e:
        assert e.code in (ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE)
