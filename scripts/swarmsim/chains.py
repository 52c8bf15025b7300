"""The fastest chains through each node, by how many of its blocks they ride, for the bounds' latencies
(bound.py, batch_bound.py): one client, every node stepping one token and sending one token's state.
Relayed (`fastest_by_ride`), each hop a round trip from the client, so a hop's cost is the node's own and
a cover is a sweep over blocks. Pushed (`fastest_pushed_by_ride`), the state goes node to node, so a hop
also costs the link from the node before (links need not obey the triangle inequality): a sweep over
block boundaries, each a min over the nodes left there and those boarded, per client region."""

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
    return [_by_ride(before[:, None], after[:, None], x, fixed[i], per_block[i]) for i, x in enumerate(nodes)]


def fastest_pushed_by_ride(nodes: Sequence[Span], entry: np.ndarray, back: np.ndarray, link: np.ndarray,
                           fixed: Sequence[float], per_block: Sequence[float], n: int) -> list[np.ndarray]:
    """Per node, by how many of its blocks a pushed chain rides (index j − 1 for j blocks), the least seconds
    per token of a chain over blocks [0, n) that rides it so, for a client in any of R regions: `entry[r, y]`
    from the client to a first node y, each hop `fixed` plus `per_block` a block, `link[x, y]` from a node x
    to the next y, `back[r, x]` from the last node x to the client. A node may recur in a chain, even hop to
    itself, as in `fastest_by_ride`: the chains a client takes are among those searched, so the least still
    bounds theirs."""
    fixed, per_block = np.asarray(fixed, dtype=float), np.asarray(per_block, dtype=float)
    starts, ends = np.array([x.start for x in nodes], dtype=int), np.array([x.end for x in nodes], dtype=int)
    before = _boardings(starts, ends, entry, link, fixed, per_block, n)
    # mirrored blocks and links: boarding y at n − b in the mirror is leaving y at b, onward to the client
    after = _boardings(n - ends, n - starts, back, link.T, fixed, per_block, n)[::-1]
    return [_by_ride(before[:, :, i], after[:, :, i], x, fixed[i], per_block[i]) for i, x in enumerate(nodes)]


def _by_ride(before: np.ndarray, after: np.ndarray, x: Span, fixed: float, per_block: float) -> np.ndarray:
    """By ride length j (index j − 1), the least over boardings a and columns r (client regions) of
    before[a, r] + x's hop over j blocks + after[a + j, r]: `before` the least seconds up to boarding x at
    each boundary, `after` those from leaving it at each boundary, both (n + 1, R)."""
    span = x.end - x.start
    leaving = np.concatenate([after[x.start + 1:x.end + 1], np.full((span, after.shape[1]), math.inf)])
    # [a, r, j − 1]: boarded at x.start + a, left at x.start + a + j, past the span's end at inf
    windows = sliding_window_view(leaving, span, axis=0)[:span]
    ride = (before[x.start:x.end, :, None] + windows).reshape(-1, span).min(axis=0)  # one axis: 4x faster
    return ride + fixed + np.arange(1, span + 1) * per_block


def _boardings(starts: np.ndarray, ends: np.ndarray, entry: np.ndarray, link: np.ndarray, fixed: np.ndarray,
               per_block: np.ndarray, n: int) -> np.ndarray:
    """board[b, r, y]: the least seconds, from a client in region r, of chains covering [0, b) and then
    boarding y at b (its link in, not its hop); inf where y does not hold block b. One sweep over boundaries,
    each node keeping its best boarding so far, each boundary a min over the nodes left there."""
    regions, count = entry.shape
    board = np.full((n + 1, regions, count), math.inf)
    first = starts == 0
    board[0][:, first] = entry[:, first]
    riding = np.full((regions, count), math.inf)  # least (seconds at boarding − boarding block · per_block)
    for b in range(1, n):
        riding = np.minimum(riding, board[b - 1] - (b - 1) * per_block)
        left, on = np.flatnonzero((starts < b) & (ends >= b)), np.flatnonzero((starts <= b) & (ends > b))
        if left.size and on.size:
            leaving = riding[:, left] + fixed[left] + b * per_block[left]
            board[b][:, on] = (leaving[:, :, None] + link[np.ix_(left, on)]).min(axis=1)
    return board


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
