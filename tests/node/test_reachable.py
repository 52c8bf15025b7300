"""A private node dials the nodes that push into its first block, when they can be dialed directly."""

from __future__ import annotations

from node.reachable import direct_pushers
from tests.routing.nodes import node

PUBLIC = ["/ip4/11.77.0.3/tcp/4000/p2p/x"]
CIRCUIT = ["/ip4/11.77.0.2/tcp/4000/p2p/R/p2p-circuit/p2p/x"]


def test_the_reachable_nodes_serving_the_block_before_ours_push_to_us():
    records = [node("before", 0, 10, maddrs=PUBLIC), node("overlap", 5, 15, maddrs=PUBLIC),
               node("home", 0, 10, maddrs=CIRCUIT), node("after", 10, 20, maddrs=PUBLIC),
               node("far", 0, 5, maddrs=PUBLIC), node("draining", 0, 10, maddrs=PUBLIC, state="draining"),
               node("me", 0, 10, maddrs=PUBLIC), node("nowhere", 0, 10)]
    assert [r.peer_id for r in direct_pushers(records, "me", 10)] == ["before", "overlap"]
    assert direct_pushers(records, "me", 0) == []  # the first block: only the client sends to us


def test_a_flood_of_free_records_costs_a_bounded_number_of_dials_and_keeps_the_met():
    from node.reachable import MAX_PUSHERS_MET

    fakes = [node(f"fake{i:03d}", 0, 10, maddrs=PUBLIC) for i in range(100)]
    real = node("real", 0, 10, maddrs=PUBLIC)
    chosen = [r.peer_id for r in direct_pushers([*fakes, real], "me", 10, met={"real"})]
    assert len(chosen) == MAX_PUSHERS_MET and chosen[0] == "real"


def test_an_announcement_reads_only_the_blocks_of_the_nodes_it_measures_and_meets():
    """The block after the span (next-block neighbours), and the one before it when private (pushers):
    every pusher `direct_pushers` picks is stored under that block's key."""
    from node.neighbours import neighbour_blocks

    assert neighbour_blocks(10, 20, 48, private=False) == [20]
    assert neighbour_blocks(10, 20, 48, private=True) == [9, 20]
    assert neighbour_blocks(0, 48, 48, private=True) == []  # the whole model: no one to read
    records = [node("before", 0, 10, maddrs=PUBLIC), node("overlap", 5, 15, maddrs=PUBLIC)]
    assert all(r.start <= 9 < r.end for r in direct_pushers(records, "me", 10))
