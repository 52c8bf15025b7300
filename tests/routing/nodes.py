"""Records of made-up nodes and a clock that moves on demand, for routing tests that need no swarm."""

from __future__ import annotations

from typing import Any

from routing.records import ServerRecord
from routing.wire import PROTOCOL_VERSION


def node(peer: str, start: int, end: int, throughput: float = 10.0, **changes: Any) -> ServerRecord:
    """An online node of this protocol serving [start, end) at `throughput` tokens/s through its span."""
    fields: dict[str, Any] = dict(peer_id=peer, state="online", start=start, end=end, throughput=throughput,
                                  dtype="float32", device="cpu", cache_tokens_left=8192, version=PROTOCOL_VERSION)
    return ServerRecord(**{**fields, **changes})


def chain(hops: list) -> list[tuple[str, int, int]]:
    """A planned chain as (peer, start, end) triples, to compare with what a test expects."""
    return [(h.peer_id, h.start, h.end) for h in hops]


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
