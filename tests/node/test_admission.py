"""Cache admission in process, with an injected clock: fair shares, preemption, idle eviction."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from node.admission import Admission
from routing.errors import ErrorCode, ProtocolError

POOL = 120  # pages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class Held:
    client: str
    pages: int
    last_active: float
    busy: bool = False


class Node:
    """The pool and its sessions as the daemon keeps them, carrying out admission's decisions."""

    def __init__(self, peer_pages: int = POOL // 2) -> None:
        self.clock = Clock()
        self.admission = Admission(POOL, peer_pages, evict_idle_after=30, clock=self.clock)
        self.sessions: list[Held] = []
        self.ended: list[tuple[Held, ErrorCode]] = []

    @property
    def free(self) -> int:
        return POOL - sum(s.pages for s in self.sessions)

    def grow(self, session: Held, more: int) -> bool:
        decision = self.admission.admit(session.client, more, self.free, self.sessions, exclude=session)
        for e in decision.evict:
            self.sessions.remove(e.session)
            self.admission.charge(e.session.client, -e.session.pages)
            self.ended.append((e.session, e.code))
            e.session.pages = 0
        if decision.admitted:
            if session not in self.sessions:
                self.sessions.append(session)
            session.pages += more
            session.last_active = self.clock()
            self.admission.charge(session.client, more)
        return decision.admitted

    def open(self, client: str, pages: int) -> Held:
        s = Held(client, 0, self.clock())
        assert self.grow(s, pages)
        return s

    def held(self, client: str) -> int:
        return sum(s.pages for s in self.sessions if s.client == client)


def test_two_hogs_within_their_caps_cannot_keep_an_honest_newcomer_out() -> None:
    node = Node()
    a, b = node.open("a", POOL // 2), node.open("b", POOL // 2)
    assert node.free == 0
    node.clock.now += 10  # both step every 10 s: never idle
    honest = node.open("honest", 2)
    assert node.ended == [(a, ErrorCode.CACHE_RECLAIMED)]  # the largest above its share (60 > 40), oldest first
    assert node.held("honest") == 2 and b in node.sessions
    for _ in range(38):  # the honest client grows to its share, a page a step, while b keeps stepping
        node.clock.now += 1
        assert node.grow(honest, 1)
    assert node.held("honest") == POOL // 3 and node.held("b") == POOL // 2


def test_the_evicted_holder_is_the_largest_above_its_share() -> None:
    node = Node()
    small, large = node.open("small", 45), node.open("large", 55)
    node.open("mid", 20)  # the pool is full; 3 want pages, so the share is 40 (with a 4th, 30)
    node.clock.now += 5
    assert node.grow(Held("new", 0, node.clock()), 10)
    assert node.ended == [(large, ErrorCode.CACHE_RECLAIMED)]
    assert small in node.sessions


def test_a_peer_asking_beyond_its_share_gets_nothing_and_ends_no_one() -> None:
    node = Node()
    node.open("a", 60)
    node.open("b", 60)
    node.clock.now += 5
    assert not node.grow(Held("greedy", 0, node.clock()), 41)  # above 120 / 3
    assert node.ended == [] and node.free == 0


def test_a_holder_within_its_share_is_never_reclaimed() -> None:
    node = Node(peer_pages=POOL)
    a, b, c = node.open("a", 30), node.open("b", 30), node.open("c", 60)
    node.clock.now += 5
    d = Held("d", 0, node.clock())
    assert node.grow(d, 30)  # four want pages: the share is 30, and only c is above it
    assert node.ended == [(c, ErrorCode.CACHE_RECLAIMED)] and a in node.sessions and b in node.sessions
    assert not node.grow(d, 31)  # d beyond its share (now 40) ends no one
    assert len(node.ended) == 1


def test_k_identities_hold_at_most_k_over_k_plus_one_of_the_pool_against_one_honest_client() -> None:
    k, rounds = 5, 200
    node = Node(peer_pages=POOL)
    share = POOL // (k + 1)
    hogs = {f"hog{i}": node.open(f"hog{i}", POOL // k) for i in range(k)}
    honest = Held("honest", 0, node.clock())
    for _ in range(rounds):  # all step each second (never idle); every hog asks for a page (reopening when
        node.clock.now += 1  # ended), and so does the honest client, up to its share
        for s in node.sessions:
            s.last_active = node.clock()
        for name, h in hogs.items():
            if h not in node.sessions:
                hogs[name] = h = Held(name, 0, node.clock())
            node.grow(h, 1)
        if node.held("honest") < share:
            assert node.grow(honest, 1)  # within its share: always admitted
    assert node.held("honest") == share and all(s is not honest for s, _ in node.ended)
    assert sum(node.held(name) for name in hogs) <= POOL - share


def test_idle_sessions_go_first_least_recently_used_and_before_any_reclaim() -> None:
    node = Node()
    old, recent = node.open("a", 30), node.open("a", 30)
    node.clock.now += 10
    busy_hog = node.open("b", 60)
    node.clock.now += 25  # a's sessions idle 35 s (past 30), b's 25 s
    assert node.grow(Held("new", 0, node.clock()), 20)
    assert node.ended == [(old, ErrorCode.SESSION_EXPIRED)]
    assert recent in node.sessions and busy_hog in node.sessions


def test_busy_sessions_and_the_asking_one_are_never_ended() -> None:
    node = Node(peer_pages=POOL)
    computing = node.open("a", 70)
    computing.busy = True
    mine = node.open("b", 50)
    node.clock.now += 100
    assert not node.grow(mine, 20)  # both idle, but a computes and b asks (and is above its share of 60)
    assert node.ended == []
    mine.last_active = node.clock()  # b steps within its pages
    assert node.grow(Held("c", 0, node.clock()), 10)  # a is the largest above the share of 40, but computing
    assert node.ended == [(mine, ErrorCode.CACHE_RECLAIMED)] and computing in node.sessions


def test_the_per_peer_cap_still_holds() -> None:
    node = Node(peer_pages=50)
    node.open("a", 50)
    with pytest.raises(ProtocolError) as refused:
        node.grow(Held("a", 0, node.clock()), 1)
    assert refused.value.code == ErrorCode.PEER_LIMIT and "limit 50" in str(refused.value)
