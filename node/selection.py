"""Which blocks a node serves: the span where the swarm is weakest, and when moving is worth it.

Coverage of a block is the summed throughput of the online nodes serving it. A joining node takes
the window whose sorted coverage is lexicographically smallest: blocks nobody serves first, then
the thinnest. A serving node moves only when that clearly lifts the swarm's weakest block (or
removes uncovered blocks), never for a marginal gain, so nodes do not oscillate; of k nodes on the
same span, which all reach the same decision at once, each moves with probability 1/k.
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

from routing.records import ServerRecord

HYSTERESIS = 0.2  # a move must raise the weakest block's throughput by 20%


def coverage(records: Iterable[ServerRecord], num_blocks: int, exclude: str | None = None) -> list[float]:
    """Per-block served throughput from online records (optionally without one peer)."""
    cov = [0.0] * num_blocks
    for r in records:
        if r.peer_id == exclude or r.state not in ("online", "joining"):
            continue
        for b in range(max(0, r.start), min(num_blocks, r.end)):
            cov[b] += max(r.throughput, 0.0)
    return cov


def best_start(cov: Sequence[float], length: int) -> int:
    """Start of the `length`-block window with the weakest coverage (ties: the lowest start)."""
    length = min(length, len(cov))
    starts = range(len(cov) - length + 1)
    return min(starts, key=lambda s: (sorted(cov[s:s + length]), s))


def _weakness(cov: Sequence[float]) -> tuple[float, int]:
    low = min(cov)
    return low, sum(1 for c in cov if c == low)


def should_move(records: Iterable[ServerRecord], num_blocks: int, me: ServerRecord) -> int | None:
    """The start to move to, or None when staying is as good (within the hysteresis)."""
    records = list(records)
    others = coverage(records, num_blocks, exclude=me.peer_id)
    length = me.end - me.start
    target = best_start(others, length)
    if target == me.start:
        return None
    now = list(others)
    moved = list(others)
    for b in range(me.start, me.end):
        now[b] += me.throughput
    for b in range(target, target + length):
        moved[b] += me.throughput
    (low_now, count_now), (low_moved, count_moved) = _weakness(now), _weakness(moved)
    if low_now == 0:
        better = low_moved > 0 or count_moved < count_now  # fewer uncovered blocks
    else:
        better = low_moved > low_now * (1 + HYSTERESIS)
    return target if better else None


def move_chance(records: Iterable[ServerRecord], me: ServerRecord) -> float:
    """The probability with which a node that `should_move` does move at this check: 1/k, k being the
    online nodes on exactly its span (itself included). Such twins read the same coverage and reach the
    same decision within the same few seconds; were all to move, the span they leave would be the new
    hole and they would chase it back and forth (seen with 8 nodes in scripts/scale_test.py). With
    1/k, one of them moves per round on average and the next round sees where it went."""
    twins = sum(1 for r in records if r.state == "online" and r.peer_id != me.peer_id
                and (r.start, r.end) == (me.start, me.end))
    return 1.0 / (1 + twins)


def rebalance_delay(period: float, rng: random.Random | None = None) -> float:
    """Seconds to the next coverage check: jittered, so nodes do not all move in step."""
    return period * (rng or random).uniform(0.75, 1.25)


def blocks_for_budget(budget_bytes: int, block_bytes: int, cache_bytes_per_block: int, num_blocks: int) -> int:
    """How many blocks fit in `budget_bytes` with room for their KV cache (at least one)."""
    per_block = block_bytes + cache_bytes_per_block
    return max(1, min(num_blocks, budget_bytes // per_block))
