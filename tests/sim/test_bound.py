"""The linear-program bound on small swarms whose answer is known by hand."""

from __future__ import annotations

import pytest

from scripts.swarmsim.bound import Capacity, best_placement_bound, cache_limit, placement_bound


def test_a_pipeline_runs_at_its_slowest_stage() -> None:
    nodes = [Capacity(0, 2, cost=0.01, upload=1e9), Capacity(2, 4, cost=0.05, upload=1e9)]
    assert placement_bound(nodes, 4) == pytest.approx(1 / (2 * 0.05))


def test_parallel_nodes_add_up_and_an_uplink_caps_its_node() -> None:
    nodes = [Capacity(0, 4, cost=0.01, upload=1e9), Capacity(0, 4, cost=0.01, upload=5.0)]
    assert placement_bound(nodes, 4) == pytest.approx(1 / (4 * 0.01) + 5.0)


def test_an_uncovered_block_means_no_throughput_but_placing_anew_would_help() -> None:
    nodes = [Capacity(0, 2, cost=0.01, upload=1e9), Capacity(0, 2, cost=0.01, upload=1e9)]
    assert placement_bound(nodes, 4) == 0.0
    assert best_placement_bound(nodes, 4) == pytest.approx(2 * (1 / 0.01) / 4)


def test_the_cache_limit_is_the_thinnest_blocks_sessions_in_flight_over_the_time_per_token() -> None:
    """Block 3 has one node, of 1,000 cache tokens: two 500-token sessions in flight, each at 0.5 s a token."""
    nodes = [Capacity(0, 4, cost=0.01, upload=1e9, cache=1000), Capacity(0, 3, cost=0.01, upload=1e9, cache=4000)]
    assert cache_limit(nodes, 4, session_tokens=500, time_per_token=[0.5, 0.1]) == pytest.approx(4.0)
