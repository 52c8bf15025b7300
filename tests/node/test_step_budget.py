"""A session's step budget, in process: each of its client's step tickets is spent once, for exactly
the positions it names, so pushes compute no more than the client asked for."""

from __future__ import annotations

import pytest

from ledger.keys import Identity
from node.step_budget import StepBudget
from routing.errors import ErrorCode, ProtocolError
from routing.grants import ring_ticket, ticket

CLIENT, OTHER = Identity.generate(), Identity.generate()
SID = "s1"


def _spend(budget: StepBudget, raw, start: int, shape: tuple[int, ...], client: str = CLIENT.peer_id):
    return budget.spend(raw, client=client, session=SID, start=start, shape=shape)


def _refused(budget: StepBudget, raw, start: int, shape: tuple[int, ...], code: ErrorCode = ErrorCode.PUSH_REFUSED,
             client: str = CLIENT.peer_id) -> str:
    with pytest.raises(ProtocolError) as caught:
        _spend(budget, raw, start, shape, client)
    assert caught.value.code == code
    return str(caught.value)


def test_each_ticket_is_spent_once_and_counts_the_positions_it_names() -> None:
    budget = StepBudget()
    prompt = ticket(CLIENT, session=SID, start=0, tokens=8, batch=1).to_wire()
    assert _spend(budget, prompt, 0, (1, 8, 4)) == prompt  # travels on with the step's output
    assert "spent" in _refused(budget, prompt, 0, (1, 8, 4))  # the same step pushed again
    for position in range(8, 12):  # decoding, one token at a time
        _spend(budget, ticket(CLIENT, session=SID, start=position, tokens=1, batch=1).to_wire(), position, (1, 1, 4))
    rewind = ticket(CLIENT, session=SID, start=9, tokens=3, batch=1).to_wire()  # speculation rolled back
    _spend(budget, rewind, 9, (1, 3, 4))
    assert budget.requested == 8 + 4 + 3


def test_a_push_other_than_the_ticketed_step_is_refused_and_spends_nothing() -> None:
    budget = StepBudget()
    one = ticket(CLIENT, session=SID, start=4, tokens=2, batch=1).to_wire()
    for start, shape in [(4, (1, 64, 4)), (0, (1, 2, 4)), (4, (2, 2, 4))]:  # grown, rewound, widened
        assert "the ticket asks for 2 position(s) from 4" in _refused(budget, one, start, shape)
    assert (budget.requested, budget.seq) == (0, -1)
    _spend(budget, one, 4, (1, 2, 4))
    assert budget.requested == 2


def test_an_older_ticket_after_a_newer_one_is_refused() -> None:
    budget = StepBudget()
    older = ticket(CLIENT, session=SID, start=0, tokens=1, batch=1).to_wire()
    newer = ticket(CLIENT, session=SID, start=1, tokens=1, batch=1).to_wire()
    _spend(budget, newer, 1, (1, 1, 4))
    assert "spent" in _refused(budget, older, 0, (1, 1, 4))


def test_tickets_of_another_client_or_session_or_forged_are_refused() -> None:
    budget = StepBudget()
    theirs = ticket(OTHER, session=SID, start=0, tokens=1, batch=1).to_wire()
    _refused(budget, theirs, 0, (1, 1, 4))
    _refused(budget, ticket(CLIENT, session=SID, start=0, tokens=1, batch=1).to_wire(), 0, (1, 1, 4),
             client=OTHER.peer_id)  # our ticket, pushed into another client's session of the same name
    elsewhere = ticket(CLIENT, session="s2", start=0, tokens=1, batch=1).to_wire()
    _refused(budget, elsewhere, 0, (1, 1, 4))
    forged = {**ticket(CLIENT, session=SID, start=0, tokens=1, batch=1).to_wire(), "tokens": 100}
    _refused(budget, forged, 0, (1, 100, 4))
    for garbage in ({}, [], "ticket", {**elsewhere, "seq": -1}):
        _refused(budget, garbage, 0, (1, 1, 4), code=ErrorCode.BAD_FRAME)
    assert (budget.requested, budget.required) == (0, False)


def test_a_session_that_spent_a_ticket_or_asked_for_them_takes_no_push_without_one() -> None:
    legacy = StepBudget()
    assert _spend(legacy, None, 0, (1, 5, 4)) is None  # a client that signs no tickets
    _spend(legacy, ticket(CLIENT, session=SID, start=5, tokens=1, batch=1).to_wire(), 5, (1, 1, 4))
    assert "must carry" in _refused(legacy, None, 6, (1, 1, 4))
    assert "must carry" in _refused(StepBudget(required=True), None, 0, (1, 1, 4))


def _ring(budget: StepBudget, raw, start: int, shape: tuple[int, ...] = (1, 1, 4), client: str = CLIENT.peer_id):
    return budget.spend_ring(raw, client=client, session=SID, start=start, shape=shape)


def test_a_ring_ticket_runs_each_of_its_positions_once_in_order_until_a_later_ticket() -> None:
    budget = StepBudget()
    _spend(budget, ticket(CLIENT, session=SID, start=0, tokens=8, batch=1).to_wire(), 0, (1, 8, 4))  # the prompt
    ring = ring_ticket(CLIENT, session=SID, start=8, tokens=3).to_wire()
    for position in (8, 9):
        assert _ring(budget, ring, position).seq == ring["seq"]
    for position, why in [(9, "computed already"), (8, "computed already"), (11, "runs positions 8..10")]:
        with pytest.raises(ProtocolError, match=why):
            _ring(budget, ring, position)
    with pytest.raises(ProtocolError, match="one row of 1..1 positions"):
        _ring(budget, ring, 10, (1, 2, 4))  # no drafts on this ticket
    _ring(budget, ring, 10)
    assert budget.requested == 8 + 3
    _spend(budget, ticket(CLIENT, session=SID, start=9, tokens=1, batch=1).to_wire(), 9, (1, 1, 4))  # a rollback
    with pytest.raises(ProtocolError, match="is spent"):  # the old ring's steps still in flight are refused
        _ring(budget, ring, 10)
    for garbage in (ring_ticket(OTHER, session=SID, start=10, tokens=3).to_wire(),
                    {**ring_ticket(CLIENT, session=SID, start=10, tokens=3).to_wire(), "tokens": 100}):
        with pytest.raises(ProtocolError):
            _ring(budget, garbage, 10)
    with pytest.raises(ProtocolError) as caught:
        _ring(budget, {"seq": 1}, 10)
    assert caught.value.code == ErrorCode.BAD_FRAME


def test_a_speculating_ring_step_may_rewind_over_the_last_steps_rejected_drafts_only() -> None:
    budget = StepBudget()
    _spend(budget, ticket(CLIENT, session=SID, start=0, tokens=8, batch=1).to_wire(), 0, (1, 8, 4))
    ring = ring_ticket(CLIENT, session=SID, start=8, tokens=8, drafts=3).to_wire()
    _ring(budget, ring, 8, (1, 4, 4))  # its token and 3 drafts: positions 8..11
    _ring(budget, ring, 10, (1, 3, 4))  # one draft kept: the next step rewinds 10 and 11
    for start, shape, why in [(10, (1, 1, 4), "computed already"), (9, (1, 1, 4), "computed already"),
                              (11, (1, 5, 4), "one row of 1..4 positions"), (14, (1, 3, 4), "holds 14..16"),
                              (12, (2, 1, 4), "one row")]:
        with pytest.raises(ProtocolError, match=why):
            _ring(budget, ring, start, shape)
    _ring(budget, ring, 15, (1, 1, 4))
    assert budget.requested == 8 + 4 + 3 + 1
