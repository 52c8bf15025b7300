"""Which next-block nodes a node measures (node/neighbours.py): those it knows first, nearest first, up to
MAX_NEIGHBOURS; only online nodes serving the block after its span."""

from __future__ import annotations

from node.neighbours import MAX_NEIGHBOURS, announced, to_measure
from routing.records import MAX_RTT_MS, ServerRecord
from routing.wire import PROTOCOL_VERSION


def _record(peer: str, start: int, end: int, state: str = "online") -> ServerRecord:
    return ServerRecord(peer_id=peer, state=state, start=start, end=end, throughput=1.0, dtype="float32",
                        device="cpu", cache_tokens_left=1024, version=PROTOCOL_VERSION)


def test_known_neighbours_come_first_nearest_first_then_new_ones_up_to_the_cap() -> None:
    records = [_record(f"n{i}", 10, 20) for i in range(MAX_NEIGHBOURS + 4)]
    records += [_record("me", 0, 10), _record("before", 5, 10), _record("draining", 10, 20, "draining")]
    known = {"n7": 0.3, "n3": 0.1, "gone": 0.05}
    picked = [r.peer_id for r in to_measure(records, "me", 10, known)]
    assert picked[:2] == ["n3", "n7"]
    assert len(picked) == MAX_NEIGHBOURS and len(set(picked)) == MAX_NEIGHBOURS
    assert not {"me", "before", "draining", "gone"} & set(picked)


def test_round_trips_are_announced_in_milliseconds_capped_by_the_records_bound() -> None:
    assert announced({"a": 0.0123456, "b": 1e9}) == {"a": 12.35, "b": MAX_RTT_MS}
