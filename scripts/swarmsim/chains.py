"""The fastest relayed chain through each node, for the bound's latencies (bound.py): one client, every node
stepping one token and sending one token's state, each hop a round trip from the client."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence


class Span(Protocol):
    start: int
    end: int


@dataclass
class _Span:
    start: int
    end: int


def fastest_through(nodes: Sequence[Span], fixed: list[float], per_block: list[float], n: int) -> list[float]:
    """Per node, the least seconds per token of a chain over blocks [0, n) that rides it: the cheapest cover of
    the blocks before where it is boarded, its hop (`fixed` plus `per_block` a block), the cheapest cover of
    those after where it is left; one sweep over the boundaries each way, and one over each node's span."""
    before = _cheapest_covers(nodes, fixed, per_block, n)  # [0, b) for each b
    mirrored = [_Span(n - x.end, n - x.start) for x in nodes]
    after = _cheapest_covers(mirrored, fixed, per_block, n)[::-1]  # [b, n) for each b
    best = [math.inf] * len(nodes)
    for i, x in enumerate(nodes):
        into = math.inf  # boarded at some a < b, left at b: one sweep over b
        for b in range(x.start + 1, x.end + 1):
            into = min(into, before[b - 1] - (b - 1) * per_block[i])
            best[i] = min(best[i], into + fixed[i] + after[b] + b * per_block[i])
    return best


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
