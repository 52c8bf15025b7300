"""The fastest chains through each node by how many of its blocks they ride (scripts/swarmsim/chains.py),
relayed and pushed, against a plain dynamic program over every hop on small random swarms."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from scripts.swarmsim.chains import _Span, fastest_by_ride, fastest_pushed_by_ride
from scripts.swarmsim.engine import Config, Simulation
from scripts.swarmsim.hardware import LLAMA3_70B
from scripts.swarmsim.scenarios import HOME_MIX


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


def _pushed_by_hand(nodes: list[_Span], entry: np.ndarray, back: np.ndarray, link: np.ndarray, fixed: list[float],
                    per_block: list[float], n: int) -> list[list[float]]:
    def hop(i: int, a: int, b: int) -> float:
        return fixed[i] + (b - a) * per_block[i]

    def one_region(r: int) -> list[list[float]]:
        into = [[math.inf] * len(nodes) for _ in range(n + 1)]  # [a][y]: up to boarding y at a, its link in
        for y, node in enumerate(nodes):
            into[0][y] = entry[r, y] if node.start == 0 else math.inf
        for a in range(1, n):
            for y, node in enumerate(nodes):
                if node.start <= a < node.end:  # every hop [a', a) of every previous node x, then x to y
                    into[a][y] = min((into[b][x] + hop(x, b, a) + link[x, y] for x, prev in enumerate(nodes)
                                      for b in range(prev.start, a) if prev.end >= a), default=math.inf)
        out = [[math.inf] * len(nodes) for _ in range(n + 1)]  # [c][x]: from leaving x at c to the client
        for x in range(len(nodes)):
            out[n][x] = back[r, x]
        for c in range(n - 1, 0, -1):
            for x in range(len(nodes)):  # every next node y and every hop [c, c') of it
                out[c][x] = min((link[x, y] + hop(y, c, d) + out[d][y] for y, node in enumerate(nodes)
                                 if node.start <= c < node.end for d in range(c + 1, node.end + 1)), default=math.inf)
        return [[min(into[a][i] + hop(i, a, a + j) + out[a + j][i] for a in range(x.start, x.end - j + 1))
                 for j in range(1, x.end - x.start + 1)] for i, x in enumerate(nodes)]

    return [list(np.min(by_region, axis=0)) for by_region in zip(*map(one_region, range(entry.shape[0])))]


def _swarm(seed: int, n: int = 10) -> tuple[list[_Span], list[float], list[float]]:
    """Seven nodes: four that cover [0, n) between them, overlapping a little, and three anywhere."""
    rng = random.Random(seed)
    cuts = [0, *sorted(rng.sample(range(1, n), 3)), n]
    nodes = [_Span(a, min(n, b + rng.randrange(3))) for a, b in zip(cuts, cuts[1:])]
    nodes += [_Span(a, rng.randrange(a + 1, n + 1)) for a in (rng.randrange(n) for _ in range(3))]
    return nodes, [rng.uniform(0.01, 0.2) for _ in nodes], [rng.uniform(0.001, 0.05) for _ in nodes]


@pytest.mark.parametrize("seed", range(5))
def test_each_ride_is_the_cheapest_chain_riding_that_many_blocks(seed: int) -> None:
    nodes, fixed, per_block = _swarm(seed)
    got = fastest_by_ride(nodes, fixed, per_block, 10)
    assert np.isfinite(np.concatenate(got)).any()
    for ride, want in zip(got, _by_hand(nodes, fixed, per_block, 10)):
        assert list(ride) == pytest.approx(want)


@pytest.mark.parametrize("seed", range(5))
def test_each_pushed_ride_is_the_cheapest_chain_riding_that_many_blocks(seed: int) -> None:
    """Links asymmetric and far from the triangle inequality, client regions entering and leaving apart."""
    nodes, fixed, per_block = _swarm(seed)
    rng = np.random.default_rng(seed)
    entry, back, link = (rng.uniform(0.0, 0.3, shape) for shape in ((3, 7), (3, 7), (7, 7)))
    got = fastest_pushed_by_ride(nodes, entry, back, link, fixed, per_block, 10)
    assert np.isfinite(np.concatenate(got)).any()
    for ride, want in zip(got, _pushed_by_hand(nodes, entry, back, link, fixed, per_block, 10)):
        assert list(ride) == pytest.approx(want)


def test_pushed_rides_are_tighter_than_the_placement_free_floor() -> None:
    """The search over pushed chains (yardstick.py `rides`) never goes below what no chain beats wherever the
    nodes sit (`free_rides`), and is above it where the nodes as they sit make chains through a node slower."""
    sim = Simulation(Config(LLAMA3_70B, nodes=16, hardware_mix=HOME_MIX, client_rate=0.0, hours=0.01, push=True))
    sim.run()
    online = [x for x in sim.nodes.values() if x.state == "online"]
    yardstick = sim.yardstick
    floors = yardstick.latency_floors(online)
    rides = np.concatenate(yardstick.rides(online, floors))
    free = np.concatenate(yardstick.free_rides(online, floors))
    assert len(online) > 1 and np.isfinite(rides).all()
    assert (rides >= free - 1e-12).all() and (rides > free + 1e-3).any()
