"""Which blocks a node serves: the span where the swarm is weakest, and when moving is worth it.

Coverage of a block is the summed throughput of the online nodes serving it. A joining node takes
the window whose sorted coverage is lexicographically smallest: blocks nobody serves first, then
the thinnest. A serving node moves only when that clearly lifts the swarm's weakest block (or
removes uncovered blocks), never for a marginal gain, so nodes do not oscillate.

Nodes that read the same coverage reach the same decision at once, and if all of them move into a
hole the span they leave is the next one (herding, seen with real processes in scripts/scale_test.py).
So a move is claimed before it is made: the node announces its target (`moving_to` in its record,
where `coverage` counts it from then on), waits for concurrent claims to land in the DHT, reads
again, and goes only if no conflicting claimant has a lower peer ID and the move still pays
(`claim_holds`). Of k twins on one span, each claims with probability 1/k (`move_chance`), and a
node that moved stays put for a while (`cooled_down`): a herd that a lossy DHT read let through
does not chase the hole it left back and forth.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Iterable, Sequence

from routing.records import ServerRecord

HYSTERESIS = 0.2  # a move must raise the weakest block's throughput by 20%
CLAIM_WAIT_MAX = 10.0  # seconds a claim waits for concurrent ones to land in the DHT
COOLDOWN_CHECKS = 4  # rebalancing checks a node that moved lets pass before it may move again


def serves(record: ServerRecord) -> tuple[int, int] | None:
    """Where a record's throughput counts: at the target of a move it claimed (it is about to be
    there), else at its span while it serves or loads it; None when it is leaving or gone."""
    if record.moving_to is not None and record.state in ("online", "draining"):
        return record.moving_to, record.moving_to + record.end - record.start
    return (record.start, record.end) if record.state in ("online", "joining") else None


def coverage(records: Iterable[ServerRecord], num_blocks: int, exclude: str | None = None) -> list[float]:
    """Per-block throughput of the nodes serving (or claiming) each block, optionally without one peer."""
    cov = [0.0] * num_blocks
    for r in records:
        span = serves(r)
        if r.peer_id == exclude or span is None:
            continue
        for b in range(max(0, span[0]), min(num_blocks, span[1])):
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


def should_move(records: Iterable[ServerRecord], num_blocks: int, me: ServerRecord,
                others: Sequence[float] | None = None) -> int | None:
    """The start to move to, or None when staying is as good (within the hysteresis). `others`: the
    coverage without `me`, when the caller keeps it (a simulated swarm of a thousand); else from `records`."""
    if others is None:
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
    """The probability with which a node that `should_move` claims its move at this check: 1/k, k being
    the nodes counted on exactly its span (itself included), so that on average one twin claims per
    round and fewer claims collide."""
    twins = sum(1 for r in records if r.peer_id != me.peer_id and serves(r) == (me.start, me.end))
    return 1.0 / (1 + twins)


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def claim_holds(records: Iterable[ServerRecord], num_blocks: int, me: ServerRecord) -> bool:
    """Whether `me`, which claimed a move to `me.moving_to`, should make it, on a view read after its
    claim had time to land: no conflicting claimant (one leaving blocks it leaves, or heading where it
    heads) has a lower peer ID, and with the conflicting claimants that yield to it counted where they
    stay, the move still pays and still goes to the same place. A claimant that sees a lower one
    yields; the lowest one, seeing only higher ones, goes: of simultaneous claims, one wins."""
    assert me.moving_to is not None
    records = list(records)
    target = serves(me)
    assert target is not None
    rivals = {r.peer_id for r in records if r.peer_id != me.peer_id and r.moving_to is not None
              and r.state == "online" and (_overlap((r.start, r.end), (me.start, me.end))
                                           or _overlap(serves(r) or (0, 0), target))}
    if any(p < me.peer_id for p in rivals):
        return False
    view = [dataclasses.replace(r, moving_to=None) if r.peer_id in rivals else r for r in records]
    return should_move(view, num_blocks, dataclasses.replace(me, moving_to=None)) == me.moving_to


def claim_wait(announce_period: float) -> float:
    """Seconds between announcing a claim and reading the claims of others: long enough for stores
    that began when ours did to land, short enough that the view stays fresh."""
    return min(CLAIM_WAIT_MAX, announce_period / 2)


def cooled_down(now: float, moved_at: float | None, period: float) -> bool:
    """Whether a node that last moved at `moved_at` (None: never) may move again at `now`."""
    return moved_at is None or now - moved_at >= COOLDOWN_CHECKS * period


def rebalance_delay(period: float, rng: random.Random | None = None) -> float:
    """Seconds to the next coverage check: jittered, so nodes do not all move in step."""
    return period * (rng or random).uniform(0.75, 1.25)


# KV-cache tokens a node growing its pool (`--grow-cache`) leaves room for when it sizes its span (`--blocks
# auto`), at least. Sized for the pool alone (8,192 tokens), a 24 GB card took 39 blocks of a 70B model and had
# room for ~12 sessions, which it stepped in iterations of ~1.3 tokens; in the simulator's saturated hetero-200
# (4,800 clients, 3 minutes) reserves of 8,192 / 16,384 / 32,768 / 65,536 tokens gave 8,551 / 9,528 / 10,248 /
# 10,100 tokens/s (p95 0.73 / 0.62 / 0.58 / 0.67 s a token): fewer blocks, more sessions a node, longer chains.
GROWN_RESERVE_TOKENS = 32_768
# ... but a block's reserve never costs more than this share of the block itself: a 70B block (433 MiB in the
# simulator, 4 KiB of cache a token) allows 55,395 tokens, SmolLM2-135M's (13.5 MiB, 1.5 KiB) only 4,609, so a
# small model, whose cache is dear beside its weights, keeps the pool's sizing.
RESERVE_SHARE = 0.5


def reserve_tokens(cache_tokens: int, grow_cache: bool, block_bytes: int, kv_bytes_per_token: int) -> int:
    """KV-cache tokens per block a node sizes its span around: its pool (`--cache-tokens`), or, when the pool
    grows into what the blocks leave (`--grow-cache`), at least GROWN_RESERVE_TOKENS where that costs no more
    than RESERVE_SHARE of a block. In a busy swarm the caches bind (scripts/swarmsim/bound.py), and a block
    more on each card buys fewer hops than the sessions it displaces carry."""
    if not grow_cache:
        return cache_tokens
    return max(cache_tokens, min(GROWN_RESERVE_TOKENS, int(RESERVE_SHARE * block_bytes) // max(1, kv_bytes_per_token)))


def blocks_for_budget(budget_bytes: int, block_bytes: int, cache_bytes_per_block: int, num_blocks: int) -> int:
    """How many blocks fit in `budget_bytes` with room for their KV cache (at least one)."""
    per_block = block_bytes + cache_bytes_per_block
    return max(1, min(num_blocks, budget_bytes // per_block))


def cache_tokens_for_budget(budget_bytes: int, block_bytes: int, kv_bytes_per_token: int, blocks: int,
                            least: int) -> int:
    """KV-cache tokens a node serving `blocks` blocks gives its sessions: what its budget holds beside the
    blocks, and never under `least` (the configured pool). A node whose budget holds the whole model with
    memory to spare (an 80 GB card under a 70B model) would otherwise leave that memory idle while its
    pool, full at a few dozen sessions, turns clients away: sessions hold their cache for their whole
    life, so in a busy swarm the caches, not the GPUs, bound throughput (scripts/swarmsim/bound.py)."""
    spare = budget_bytes - blocks * block_bytes
    return max(least, spare // max(1, blocks * kv_bytes_per_token))
