"""Which chain replaces a node that failed: its blocks are planned again around it, until its ban ends."""

from __future__ import annotations

import asyncio
import time

import pytest

from routing.chain import RemoteRunner, busy_for, coverage_wake
from routing.client import is_node_failure
from routing.errors import ErrorCode, NoRouteError, PeerFailure, RemoteError
from routing.planner import plan_route
from routing.ring import silence_limit
from routing.view import Bans, SwarmView
from tests.routing.nodes import Clock, chain, node


def runner(*records, clock: Clock) -> RemoteRunner:
    """A runner over a view that already knows `records` (all measured) and never re-reads the swarm."""
    view = SwarmView(None, "root", 30, refresh_after=float("inf"))  # type: ignore[arg-type]
    view.records = {r.peer_id: r for r in records}
    view.rtt = {r.peer_id: 0.01 for r in records}
    view.bans = Bans(clock=clock)
    return RemoteRunner(view, max_length=64, hidden_size=8)


def replacement(r: RemoteRunner, failed: str, start: int, end: int, error: Exception) -> list:
    """What the runner plans for [start, end) once `failed` failed there with `error`."""
    asyncio.run(r._note_failure(failed, start, end, error))
    return chain(asyncio.run(r.view.plan(start, end, r.max_length, r.push)))


def test_a_failed_node_is_replaced_by_the_next_best_for_its_blocks() -> None:
    r = runner(node("a", 0, 15), node("b", 15, 30, 50.0), node("c", 15, 30, 10.0), clock=Clock())
    assert chain(asyncio.run(r.view.plan(0, 30))) == [("a", 0, 15), ("b", 15, 30)]
    assert replacement(r, "b", 15, 30, PeerFailure("b", "stream closed")) == [("c", 15, 30)]


def test_a_replacement_may_take_several_nodes() -> None:
    r = runner(node("a", 0, 30), node("b", 0, 12), node("c", 12, 30), clock=Clock())
    assert replacement(r, "a", 0, 30, PeerFailure("a", "timed out")) == [("b", 0, 12), ("c", 12, 30)]


def test_a_polite_refusal_reopens_on_the_same_node_once() -> None:
    r = runner(node("a", 0, 30, 50.0), node("b", 0, 30), clock=Clock())
    expired = RemoteError("a", ErrorCode.SESSION_EXPIRED.value, "idle too long")
    assert replacement(r, "a", 0, 30, expired) == [("a", 0, 30)]
    assert replacement(r, "a", 0, 30, expired) == [("b", 0, 30)]


def test_a_node_holding_fewer_positions_than_sent_is_failed_over_and_excused_once() -> None:
    """`bad_position` for a step the client checked itself: the node's copy of the session was cut
    short (a late push rewound it, before tickets ordered relayed steps): replayed there once, not a
    failed generation."""
    r = runner(node("a", 0, 30, 50.0), node("b", 0, 30), clock=Clock())
    short = RemoteError("a", ErrorCode.BAD_POSITION.value, "step starts at position 12, but the session holds 11")
    assert is_node_failure(short)
    assert replacement(r, "a", 0, 30, short) == [("a", 0, 30)]
    assert replacement(r, "a", 0, 30, short) == [("b", 0, 30)]


def test_a_banned_node_returns_when_its_ban_ends() -> None:
    clock = Clock()
    r = runner(node("a", 0, 30, 50.0), node("b", 0, 30), clock=clock)
    assert replacement(r, "a", 0, 30, PeerFailure("a", "reset")) == [("b", 0, 30)]
    clock.now += r.view.bans.base
    assert chain(asyncio.run(r.view.plan(0, 30))) == [("a", 0, 30)]


def test_with_no_other_node_for_its_blocks_the_gap_is_named() -> None:
    r = runner(node("a", 0, 15), node("b", 15, 30), clock=Clock())
    asyncio.run(r._note_failure("b", 15, 30, PeerFailure("b", "reset")))
    with pytest.raises(NoRouteError, match="block 15"):
        plan_route(r.view.records.values(), 15, 30, rtt=r.view.rtt, banned=r.view.bans)
    assert r.view.bans.next_expiry() is not None  # what the runner waits for, within its deadline


def test_a_ring_waits_for_a_silent_node_ten_times_its_slowest_recent_step_within_bounds() -> None:
    assert silence_limit([], 60.0) == 60.0  # nothing measured yet: the request timeout
    assert silence_limit([0.05, 0.2, 0.1], 60.0) == 5.0  # fast steps: the floor, for a loaded machine's hiccups
    assert silence_limit([0.05, 1.5], 60.0) == 15.0
    assert silence_limit([30.0], 60.0) == 60.0  # never beyond the request timeout


def test_a_full_nodes_avoidance_ends_by_the_deadline_so_the_last_round_comes_there() -> None:
    """A client avoids a node that refused for a full cache until it re-reads the records, but never
    past its deadline: an avoidance ending after it made the client give up at once, seconds early,
    while full nodes freed room. From the deadline on, a refusal avoids the node for the period again
    and the client tries the next chain at once, without waiting; any other failure there ends it."""
    assert busy_for(5.0, now=100.0, give_up_at=300.0) == 5.0
    assert busy_for(5.0, now=297.0, give_up_at=300.0) == 3.0
    assert busy_for(5.0, now=300.0, give_up_at=300.0) == 5.0
    assert coverage_wake(297.0, 300.0, 297.0 + 5.0, await_coverage=False) is None  # uncut: gives up 3 s early
    assert coverage_wake(297.0, 300.0, 297.0 + busy_for(5.0, 297.0, 300.0), await_coverage=False) == 300.0
    assert coverage_wake(300.0, 300.0, 305.0, await_coverage=False) is None  # past it: no more waiting
    r = runner(node("a", 0, 30), clock=Clock())
    r._give_up_at = time.monotonic() - 1.0
    full = RemoteError("a", ErrorCode.CACHE_FULL.value, "cache full")
    assert r._may_retry(full) and not r._may_retry(PeerFailure("a", "reset"))
    r._give_up_at = time.monotonic() + 60.0
    assert r._may_retry(full) and r._may_retry(PeerFailure("a", "reset"))
