"""Block choice: weakest coverage first, moves only for a clear gain."""

from __future__ import annotations

from node.config import parse_size
import dataclasses
import random

from node.selection import (COOLDOWN_CHECKS, best_start, blocks_for_budget, cache_tokens_for_budget, claim_holds,
                            claim_wait, cooled_down, coverage, move_chance, should_move)
from routing.records import ServerRecord


def rec(peer: str, start: int, end: int, tps: float = 10.0, state: str = "online",
        moving_to: int | None = None) -> ServerRecord:
    return ServerRecord(peer, state, start, end, tps, "float32", "cpu", 1000, 1, moving_to=moving_to)


def test_joining_nodes_fill_uncovered_blocks_in_order():
    records: list[ServerRecord] = []
    for i in range(4):
        start = best_start(coverage(records, 30), 8)
        records.append(rec(f"p{i}", start, start + 8))
    cov = coverage(records, 30)
    assert min(cov) > 0
    assert [(r.start, r.end) for r in records] == [(0, 8), (8, 16), (16, 24), (22, 30)]


def test_a_fifth_node_joins_where_coverage_is_weakest():
    records = [rec("a", 0, 8, 50), rec("b", 8, 16, 5), rec("c", 16, 24, 50), rec("d", 22, 30, 50)]
    assert best_start(coverage(records, 30), 8) == 8


def test_offline_and_draining_records_do_not_count():
    records = [rec("a", 0, 10, state="draining"), rec("b", 10, 20, state="offline")]
    assert coverage(records, 20) == [0.0] * 20


def test_a_redundant_node_moves_to_fill_a_gap():
    records = [rec("a", 0, 8), rec("spare", 0, 8), rec("c", 16, 24), rec("d", 22, 30)]
    assert should_move(records, 30, records[1]) == 8


def test_the_only_node_on_its_blocks_stays_even_with_a_gap_elsewhere():
    records = [rec("a", 0, 8), rec("c", 16, 24), rec("d", 22, 30)]
    assert should_move(records, 30, records[0]) is None


def test_no_move_for_a_marginal_gain():
    records = [rec("a", 0, 15, 10.0), rec("b", 15, 30, 10.0), rec("c", 0, 15, 1.0)]
    # c could add 1 tok/s to blocks 15..30 (10 -> 11): under the 20% hysteresis, so it stays.
    assert should_move(records, 30, records[2]) is None


def test_a_clear_gain_moves():
    records = [rec("a", 0, 15, 10.0), rec("b", 15, 30, 2.0), rec("c", 0, 15, 10.0)]
    assert should_move(records, 30, records[2]) == 15


def test_sizes_and_budget():
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("1.5GB") == 1_500_000_000 and parse_size("4096") == 4096
    assert blocks_for_budget(100, 30, 5, 30) == 2
    assert blocks_for_budget(10, 30, 5, 30) == 1
    assert blocks_for_budget(10**12, 30, 5, 30) == 30


def test_a_node_holding_the_whole_model_gives_its_spare_memory_to_the_cache():
    """30 blocks of 30 bytes in 1,000: 100 bytes left, 2 bytes a token on each block: 1 token; 10,000: 151."""
    assert cache_tokens_for_budget(10_000, 30, 2, 30, least=8) == (10_000 - 900) // 60
    assert cache_tokens_for_budget(1_000, 30, 2, 30, least=8) == 8  # never under the configured pool
    assert cache_tokens_for_budget(100, 30, 5, 2, least=1) == 4  # blocks_for_budget's leftover: (100 − 60) // 10


def test_twins_on_one_span_move_one_at_a_time_on_average() -> None:
    """k nodes on the same span reach the same decision together: each moves with chance 1/k."""
    twins = [rec(f"p{i}", 0, 8) for i in range(4)]
    others = [rec("q", 8, 16), rec("r", 0, 8, state="draining")]
    assert move_chance([*twins, *others], twins[0]) == 1 / 4
    assert move_chance([*twins, *others], others[0]) == 1.0


def test_a_claimed_move_counts_at_its_target_until_made() -> None:
    """Online or draining, a claimant is about to serve its target: others must not fill it too."""
    assert coverage([rec("a", 0, 4, moving_to=4)], 8) == [0.0] * 4 + [10.0] * 4
    assert coverage([rec("a", 0, 4, state="draining", moving_to=4)], 8) == [0.0] * 4 + [10.0] * 4
    assert coverage([rec("a", 4, 8, state="joining")], 8) == [0.0] * 4 + [10.0] * 4  # loading there


def _hole_and_twins(k: int) -> list[ServerRecord]:
    """k twins on 0:8 and a hole at 8:16 of 24 blocks."""
    return [*(rec(f"p{i}", 0, 8) for i in range(k)), rec("q", 16, 24)]


def _claiming(records: list[ServerRecord], claimants: set[str], target: int) -> list[ServerRecord]:
    return [dataclasses.replace(r, moving_to=target) if r.peer_id in claimants else r for r in records]


def test_of_twins_claiming_one_hole_at_once_only_the_lowest_peer_goes() -> None:
    records = _hole_and_twins(4)
    assert all(should_move(records, 24, r) == 8 for r in records[:4])  # the herd: all would move
    view = _claiming(records, {"p1", "p2", "p3"}, 8)
    assert [claim_holds(view, 24, r) for r in view[1:4]] == [True, False, False]


def test_a_claim_yields_to_a_move_already_under_way() -> None:
    records = _hole_and_twins(3)
    view = [dataclasses.replace(records[0], state="draining", moving_to=8), *_claiming(records[1:], {"p1"}, 8)]
    assert not claim_holds(view, 24, view[1])  # p0 drains to 8: the hole is taken


def test_claims_that_do_not_conflict_all_hold() -> None:
    """Two spare pairs fill two holes: neither leaves nor takes the other's blocks."""
    records = [rec("a", 0, 4), rec("b", 0, 4), rec("c", 8, 12), rec("d", 8, 12)]
    assert should_move(records, 16, records[0]) == 4
    view = _claiming(records, {"a"}, 4)
    view = [dataclasses.replace(r, moving_to=12) if r.peer_id == "c" else r for r in view]
    assert claim_holds(view, 16, view[0]) and claim_holds(view, 16, view[2])


def test_k_twins_and_one_hole_fill_it_with_one_move() -> None:
    """Rounds of checks with an injected rng, every claim of a round seen by the others (as the claim's
    wait is for): each round at most one twin moves, and once one has, nobody else claims."""
    for seed in range(20):
        rng = random.Random(seed)
        records, moves = _hole_and_twins(5), 0
        for _ in range(30):
            claims = {r.peer_id: t for r in records if r.state == "online" and (t := should_move(records, 24, r))
                      is not None and rng.random() < move_chance(records, r)}
            view = [dataclasses.replace(r, moving_to=claims.get(r.peer_id)) for r in records]
            going = [r for r in view if r.moving_to is not None and claim_holds(view, 24, r)]
            assert len(going) <= 1
            records = [dataclasses.replace(r, start=r.moving_to, end=r.moving_to + 8, moving_to=None)
                       if any(g.peer_id == r.peer_id for g in going) else dataclasses.replace(r, moving_to=None)
                       for r in view]
            moves += len(going)
        assert moves == 1 and min(coverage(records, 24)) > 0, seed


def test_a_node_that_moved_waits_before_moving_again() -> None:
    assert cooled_down(5.0, None, 60.0)
    assert not cooled_down(100.0 + COOLDOWN_CHECKS * 60.0 - 1, 100.0, 60.0)
    assert cooled_down(100.0 + COOLDOWN_CHECKS * 60.0, 100.0, 60.0)
    assert claim_wait(2.0) == 1.0 and claim_wait(600.0) <= 10.0
