"""The fastest chains through each node by how many of its blocks they ride (scripts/swarmsim/chains.py),
against a plain dynamic program over every hop on small random swarms."""

from __future__ import annotations

import math
import random

import pytest

from scripts.swarmsim.chains import _Span, fastest_by_ride


def _by_hand(nodes: list[_Span], fixed: list[float], per_block: list[float], n: int) -> list[list[float]]:
    def hop(i: int, a: int, b: int) -> float:
        return fixed[i] + (b - a) * per_block[i]

    def cover(x: int, y: int) -> float:  # cheapest hops covering [x, y), each any part of a node's span
        best = [math.inf] * (n + 1)
        best[x] = 0.0
        for a in range(x, y):
            for i, node in enumerate(nodes):
                for b in range(a + 1, min(node.end, y) + 1):
                    if node.start <= a:
                        best[b] = min(best[b], best[a] + hop(i, a, b))
        return best[y]

    return [[min(cover(0, a) + hop(i, a, a + j) + cover(a + j, n) for a in range(x.start, x.end - j + 1))
             for j in range(1, x.end - x.start + 1)] for i, x in enumerate(nodes)]


@pytest.mark.parametrize("seed", range(5))
def test_each_ride_is_the_cheapest_chain_riding_that_many_blocks(seed: int) -> None:
    rng, n = random.Random(seed), 10
    nodes = [_Span(a, rng.randrange(a + 1, n + 1)) for a in (rng.randrange(n) for _ in range(7))]
    fixed = [rng.uniform(0.01, 0.2) for _ in nodes]
    per_block = [rng.uniform(0.001, 0.05) for _ in nodes]
    for got, want in zip(fastest_by_ride(nodes, fixed, per_block, n), _by_hand(nodes, fixed, per_block, n)):
        assert list(got) == pytest.approx(want)
