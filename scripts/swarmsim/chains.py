"""The fastest relayed chains through each node, by how many of its blocks they ride, for the bounds' latencies
(bound.py, batch_bound.py): one client, every node stepping one token and sending one token's state, each hop
a round trip from the client."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Span(Protocol):
    start: int
    end: int


@dataclass
class _Span:
    start: int
    end: int


def fastest_by_ride(nodes: Sequence[Span], fixed: list[float], per_block: list[float], n: int) -> list[np.ndarray]:
    """Per node, by how many of its blocks a chain rides (index j − 1 for j blocks), the least seconds per
    token of a chain over blocks [0, n) that rides it so: the cheapest cover of the blocks before where it is
    boarded, its hop (`fixed` plus `per_block` a block), the cheapest cover of those after where it is left."""
    before = np.array(_cheapest_covers(nodes, fixed, per_block, n))  # [0, b) for each b
    mirrored = [_Span(n - x.end, n - x.start) for x in nodes]
    after = np.array(_cheapest_covers(mirrored, fixed, per_block, n)[::-1])  # [b, n) for each b
    rides = []
    for i, x in enumerate(nodes):
        span = x.end - x.start
        leaving = np.concatenate([after[x.start + 1:x.end + 1], np.full(span, math.inf)])
        # row a (boarded at x.start + a), column j − 1: left at x.start + a + j, past the span's end at inf
        ride = (before[x.start:x.end, None] + sliding_window_view(leaving, span)[:span]).min(axis=0)
        rides.append(ride + fixed[i] + np.arange(1, span + 1) * per_block[i])
    return rides


def _cheapest_covers(nodes: Sequence[Span], fixed: list[float], per_block: list[float], n: int) -> list[float]:
    """cost[b]: the least sum over hops of (fixed + blocks · per_block) of chains covering [0, b), a hop
    boarding its node at any block of its span: one sweep, each node keeping its best boarding."""
    cost = [math.inf] * (n + 1)
    cost[0] = 0.0
    starting: dict[int, list[int]] = {}
    for i, x in enumerate(nodes):
        starting.setdefault(x.start, []).append(i)
    riding: dict[int, float] = {}  # node: least (cost at boarding − boarding block · per_block)
    for b in range(n + 1):
        if b:
            riding = {i: v for i, v in riding.items() if nodes[i].end >= b}
            cost[b] = min((v + fixed[i] + b * per_block[i] for i, v in riding.items()), default=math.inf)
        for i in starting.get(b, ()):
            riding.setdefault(i, math.inf)
        for i in riding:
            if nodes[i].end > b:
                riding[i] = min(riding[i], cost[b] - b * per_block[i])
    return cost
