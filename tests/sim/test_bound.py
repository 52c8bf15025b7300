"""The linear-program bound on small swarms whose answer is known by hand."""

from __future__ import annotations

import pytest

from scripts.swarmsim.bound import Capacity, best_placement_bound, placement_bound


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
