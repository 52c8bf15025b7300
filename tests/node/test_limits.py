"""Per-client limits in process, with an injected clock: the session-open rate."""

from __future__ import annotations

import pytest

from node.limits import PeerBook, PeerLimits
from routing.errors import ErrorCode, ProtocolError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_burst_to_the_rate_then_refill_continuously() -> None:
    clock = Clock()
    book = PeerBook(PeerLimits(streams=4, sessions=1000, opens_per_minute=60), clock)
    for _ in range(60):
        book.add_session("a")
    with pytest.raises(ProtocolError) as refused:
        book.add_session("a")
    assert refused.value.code == ErrorCode.PEER_LIMIT and "60 a minute" in str(refused.value)
    book.add_session("b")  # another peer has its own bucket
    clock.now += 1.0  # one open a second comes back
    book.add_session("a")
    with pytest.raises(ProtocolError):
        book.add_session("a")


def test_refilled_buckets_are_forgotten_when_many_peers_opened(monkeypatch) -> None:
    monkeypatch.setattr("node.limits.MAX_TRACKED_OPENERS", 3)
    clock = Clock()
    book = PeerBook(PeerLimits(streams=4, sessions=10, opens_per_minute=60), clock)
    for peer in "abc":
        book.add_session(peer)
    clock.now += 61
    book.add_session("d")
    assert set(book._opens) == {"d"}
