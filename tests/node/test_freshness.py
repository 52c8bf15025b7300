"""When a node's load moved enough to announce before its period (node/freshness.py)."""

from __future__ import annotations

from node.freshness import load_moved


def test_a_session_or_two_is_jitter_a_quarter_of_the_load_is_news() -> None:
    assert not load_moved(0, 1) and load_moved(0, 2)
    assert not load_moved(3, 4) and load_moved(3, 5) and load_moved(3, 1)
    assert not load_moved(40, 49) and load_moved(40, 50) and load_moved(40, 30)
