"""Bans with backoff: a failing node is avoided for longer each time, and cannot keep a client
re-opening on it by answering every open with a polite refusal."""

from __future__ import annotations

from routing.view import Bans
from tests.routing.nodes import Clock


def test_a_polite_refusal_is_excused_once_per_window_per_peer() -> None:
    bans = Bans()
    assert bans.excuse("liar") and bans.excuse("honest")  # an expired session, a node starting to drain
    assert not bans.excuse("liar")  # the same answer again within the window: treated as a failure
    assert bans.ban("liar") == bans.base and "liar" in bans and "honest" not in bans


def test_the_excuse_renews_after_its_window() -> None:
    bans = Bans(excuse_window=0.0)
    assert bans.excuse("node") and bans.excuse("node")


def test_the_excuse_window_runs_on_the_clock() -> None:
    clock = Clock()
    bans = Bans(excuse_window=60.0, clock=clock)
    assert bans.excuse("node")
    clock.now += 59.0
    assert not bans.excuse("node")
    clock.now += 1.0
    assert bans.excuse("node")


def test_each_failure_doubles_the_ban_up_to_its_cap() -> None:
    bans = Bans(base=5.0, cap=30.0, clock=Clock())
    assert [bans.ban("node") for _ in range(5)] == [5.0, 10.0, 20.0, 30.0, 30.0]


def test_a_ban_ends_when_its_time_is_up() -> None:
    clock = Clock()
    bans = Bans(base=5.0, clock=clock)
    bans.ban("node")
    assert "node" in bans and bans.next_expiry() == clock.now + 5.0
    clock.now += 4.9
    assert "node" in bans
    clock.now += 0.2
    assert "node" not in bans and bans.next_expiry() is None


def test_the_earliest_ban_to_end_is_the_one_to_wait_for() -> None:
    clock = Clock()
    bans = Bans(base=5.0, clock=clock)
    bans.ban("a")
    bans.ban("a")  # 10 s
    bans.ban("b")  # 5 s
    bans.ban_forever("liar")
    assert bans.next_expiry() == clock.now + 5.0


def test_a_node_proven_dishonest_is_banned_for_good() -> None:
    clock = Clock()
    bans = Bans(clock=clock)
    bans.ban_forever("liar")
    clock.now += 1e9
    assert "liar" in bans and bans.next_expiry() is None


def test_only_peer_ids_can_be_banned() -> None:
    bans = Bans(clock=Clock())
    bans.ban("node")
    assert None not in bans and 3 not in bans


def test_failures_are_remembered_after_the_ban_ends() -> None:
    clock = Clock()
    bans = Bans(base=5.0, clock=clock)
    bans.ban("node")
    clock.now += 5.0
    assert "node" not in bans and bans.failures("node") == 1 and bans.failures("other") == 0


def test_a_full_node_is_avoided_briefly_and_counts_no_failure() -> None:
    clock = Clock()
    bans = Bans(clock=clock)
    for _ in range(5):
        assert bans.busy("full", 30.0) == 30.0
        assert "full" in bans
    assert bans.failures("full") == 0  # no backoff builds up: the next refusal is as short
    clock.now += 30.0
    assert "full" not in bans
    assert bans.active() == frozenset()
    bans.ban("bad")
    assert bans.active() == {"bad"}
