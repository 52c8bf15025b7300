"""A node announces early once its free cache is far from its record's figure, not for small changes."""

from __future__ import annotations

from node.load_report import MIN_CHANGE, load_is_stale


def test_a_node_announces_again_once_its_free_cache_halved_or_doubled() -> None:
    assert not load_is_stale(8192, 8192)
    assert not load_is_stale(8192, 4096)  # half gone: the record is still within 2x
    assert load_is_stale(8192, 4095)
    assert not load_is_stale(4096, 8191)
    assert load_is_stale(4096, 8192 + MIN_CHANGE)
    assert not load_is_stale(0, MIN_CHANGE - 1)  # announced full: it waits until a session's worth is free
    assert load_is_stale(0, MIN_CHANGE)
