"""The gateway, not a browser tab, remembers which nodes have gone, and only so many."""

from __future__ import annotations

from swarmlm.api.dashboard import GONE_KEPT, _Watch


def _nodes(*peers: str) -> list[dict]:
    return [{"peer_id": p, "name": f"name-{p}"} for p in peers]


def test_a_node_whose_record_expired_is_remembered_until_it_returns() -> None:
    watch = _Watch()
    assert watch.note(_nodes("a", "b")) == []
    (gone,) = watch.note(_nodes("a"))
    assert gone["peer_id"] == "b" and gone["name"] == "name-b" and gone["gone_at"] > 0
    assert [n["peer_id"] for n in watch.note(_nodes("a"))] == ["b"]  # still listed on later refreshes
    assert watch.note(_nodes("a", "b")) == []  # back again


def test_gone_nodes_are_bounded_newest_kept() -> None:
    watch = _Watch()
    peers = [f"p{i}" for i in range(GONE_KEPT + 10)]
    for peer in peers:  # each appears once, then vanishes: a flood of short-lived records
        watch.note(_nodes(peer))
    gone = watch.note([])
    assert len(gone) == GONE_KEPT and {n["peer_id"] for n in gone} == set(peers[-GONE_KEPT:])
