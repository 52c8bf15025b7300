"""Choosing a chain of nodes that covers blocks [start, end) with the least expected step latency.

Positions between blocks are graph vertices; a node serving [a, b) offers an edge from any
position p in [a, b) to any later boundary q <= b, costing its round-trip time plus the blocks'
compute time at its announced throughput, inflated by its current load. Dijkstra finds the
cheapest chain; switching nodes mid-span is allowed when it pays.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Container, Iterable, Mapping

from .errors import NoRouteError
from .records import ServerRecord
from .wire import PROTOCOL_VERSION

DEFAULT_RTT = 0.05  # seconds, for nodes not yet pinged
MIN_THROUGHPUT = 0.01


@dataclass(frozen=True)
class Hop:
    peer_id: str
    start: int
    end: int
    record: ServerRecord


def hop_cost(record: ServerRecord, blocks: int, rtt: float) -> float:
    per_block = 1.0 / (max(record.throughput, MIN_THROUGHPUT) * (record.end - record.start))
    return rtt + blocks * per_block * (1 + record.active_sessions)


def usable(records: Iterable[ServerRecord], banned: Container[str] = (), max_length: int = 1) -> list[ServerRecord]:
    return [r for r in records if r.is_serving and r.version == PROTOCOL_VERSION and r.peer_id not in banned
            and r.max_session_length >= max_length]


def plan_route(records: Iterable[ServerRecord], start: int, end: int, *, rtt: Mapping[str, float] | None = None,
               banned: Container[str] = (), max_length: int = 1) -> list[Hop]:
    """The cheapest chain of hops covering [start, end) for sessions of `max_length` tokens;
    NoRouteError naming the first gap if none."""
    rtt = rtt or {}
    servers = [r for r in usable(records, banned, max_length) if r.start < end and r.end > start]
    boundaries = sorted({start, end} | {b for r in servers for b in (r.start, r.end) if start < b < end})
    best: dict[int, float] = {start: 0.0}
    came_from: dict[int, tuple[int, ServerRecord]] = {}
    queue: list[tuple[float, int]] = [(0.0, start)]
    while queue:
        cost, p = heapq.heappop(queue)
        if p == end:
            break
        if cost > best.get(p, float("inf")):
            continue
        for r in servers:
            if not r.start <= p < r.end:
                continue
            for q in boundaries:
                if p < q <= min(r.end, end):
                    c = cost + hop_cost(r, q - p, rtt.get(r.peer_id, DEFAULT_RTT))
                    if c < best.get(q, float("inf")):
                        best[q], came_from[q] = c, (p, r)
                        heapq.heappush(queue, (c, q))
    if end not in best:
        reachable = max(best)
        raise NoRouteError(f"no online node serves block {reachable} of [{start}, {end}); "
                           f"{len(servers)} usable node(s) cover only part of the model")
    hops: list[Hop] = []
    q = end
    while q != start:
        p, r = came_from[q]
        hops.append(Hop(r.peer_id, p, q, r))
        q = p
    return hops[::-1]
