"""Block choice: weakest coverage first, moves only for a clear gain."""

from __future__ import annotations

from node.config import parse_size
from node.selection import best_start, blocks_for_budget, coverage, move_chance, should_move
from routing.records import ServerRecord


def rec(peer: str, start: int, end: int, tps: float = 10.0, state: str = "online") -> ServerRecord:
    return ServerRecord(peer, state, start, end, tps, "float32", "cpu", 1000, 1)


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


def test_twins_on_one_span_move_one_at_a_time_on_average() -> None:
    """k nodes on the same span reach the same decision together: each moves with chance 1/k."""
    twins = [rec(f"p{i}", 0, 8) for i in range(4)]
    others = [rec("q", 8, 16), rec("r", 0, 8, state="draining")]
    assert move_chance([*twins, *others], twins[0]) == 1 / 4
    assert move_chance([*twins, *others], others[0]) == 1.0
