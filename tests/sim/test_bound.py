"""The linear-program bound on small swarms whose answer is known by hand."""

from __future__ import annotations

import pytest

from scripts.swarmsim.bound import Capacity, best_placement_bound, node_rate, placement_bound


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


def test_a_full_cache_caps_its_node_at_the_sessions_it_holds_over_their_time_per_token() -> None:
    """1,000 cache tokens hold two 500-token sessions; each token takes the chain's 0.11 s at least:
    2 / 0.11 tokens/s, however fast the GPU; an uplink slower than that caps it instead."""
    node = Capacity(0, 4, cost=1e-6, upload=100.0, cache=1000, latency=0.11)
    assert node_rate(node, 500) == pytest.approx(2 / 0.11)
    assert placement_bound([node], 4, session_tokens=500) == pytest.approx(2 / 0.11)
    assert placement_bound([node], 4) == pytest.approx(100.0)  # caches ignored: its uplink alone
    assert node_rate(Capacity(0, 4, cost=1e-6, upload=10.0, cache=1000, latency=0.11), 500) == pytest.approx(10.0)


def test_caches_add_up_per_block_and_the_thinnest_block_decides() -> None:
    """Blocks 0-2 have both nodes (2 + 8 sessions of 500 tokens at 0.5 s and 0.1 s a token: 4 + 80 tokens/s),
    block 3 only the first: 4 tokens/s. Placed anew, each node spreads what it passes over 4 blocks."""
    nodes = [Capacity(0, 4, cost=1e-6, upload=1e9, cache=1000, latency=0.5),
             Capacity(0, 3, cost=1e-6, upload=1e9, cache=4000, latency=0.1)]
    assert placement_bound(nodes, 4, session_tokens=500) == pytest.approx(4.0)
    assert best_placement_bound(nodes, 4, session_tokens=500) == pytest.approx((4 * 4.0 + 3 * 80.0) / 4)
    assert best_placement_bound(nodes, 4, 500, latency_floor=[0.25, 0.1]) == pytest.approx((4 * 8.0 + 3 * 80.0) / 4)


def test_compute_still_binds_a_slow_node_with_a_big_cache() -> None:
    nodes = [Capacity(0, 4, cost=0.05, upload=1e9, cache=1e6, latency=0.1)]
    assert placement_bound(nodes, 4, session_tokens=500) == pytest.approx(1 / (4 * 0.05))
