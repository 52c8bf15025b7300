"""Choosing a chain of nodes that covers blocks [start, end) with the least expected time per step.

The cost of a chain is the time one step takes on the path the client will actually use:
  - relayed: each hop is a round trip client → node → client, plus the node's wait and compute;
  - pushed: client → first node, node → node for each hop, last node → client (one way each),
    plus every node's wait and compute.
Compute for b blocks of a node serving s blocks at load l is b / s times its step through its span
at a batch of l + 1 sessions, which the node's two announced figures give (`batch_step`): tokens/s
for one session alone (t), and for B sessions together (T_B: what batching gains on a GPU). A record
without the second is priced at (1 + l) / t, as a node that gains nothing from batching: a batched
A100 priced so looked dozens of times slower than it is (README, "Policies against the bound").
A busy node's step also waits for the iteration in progress, half its step through its span
(`hop_waits`). Either search is one sweep over the block boundaries (hops only go forward); a node may
be left mid-span when switching pays. A pushed hop's cost depends on the node before it, so the pushed
sweep takes, at each boundary, a minimum over a matrix of links between the nodes arriving and those
boarding.

A client that rings (routing/ring.py: `ring=True` for the whole model) prices a node that serves every
block and announces `ring` as the ring it closes alone: its wait and compute, no leg to or from the
client, which is off the path of each token. Longer rings are priced as the pushed chains they also
are, the client's legs included (an over-estimate: their last node sends the token to the first).

Nothing a node announces is believed as is. Round trips the client measured itself are the
ground truth; a node's claimed round trip to another (its DHT record's `rtt_ms`) is clamped
between the bounds the client's own measurements imply (|rtt(c,a) − rtt(c,b)| ≤ rtt(a,b) ≤
rtt(c,a) + rtt(c,b)); each announced throughput (t, T_B) counts for at most CLAIM_CAP times the
candidates' median of it, and T_B for at most B·t. Nodes the client has not measured are planned
through only when no measured chain exists, at UNMEASURED_RTT.

A node behind a home router announces only `/p2p-circuit` addresses, so everyone reaches it through a
relay, and every round trip measured to it (the client's ping, a predecessor's neighbour ping) runs
through that relay: a relayed hop is planned at its measured cost like any other, so a chain through a
relay wins only when it is the best one. Where nothing is measured, a relayed node counts two
unmeasured legs (to its relay, then on to it) and so loses to an unmeasured direct one.
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass
from typing import Callable, Container, Iterable, Mapping

import numpy as np

from .errors import NoRouteError
from .records import ServerRecord
from .wire import PROTOCOL_VERSION

UNMEASURED_RTT = 1.0  # seconds: a node that has not answered a ping is a last resort
CLAIM_CAP = 4.0  # announced throughput counts up to this multiple of the candidates' median
MIN_THROUGHPUT = 0.01


@dataclass(frozen=True)
class Hop:
    peer_id: str
    start: int
    end: int
    record: ServerRecord


def is_relayed(record: ServerRecord) -> bool:
    """Whether peers reach this node only through a relay: its record announces only circuit addresses."""
    return bool(record.maddrs) and all("/p2p-circuit" in m for m in record.maddrs)


class Links:
    """Expected one-way delays between the client and nodes, and between nodes, in seconds."""

    def __init__(self, records: Mapping[str, ServerRecord], rtt: Mapping[str, float]) -> None:
        self.records, self.rtt = records, rtt

    def client_rtt(self, peer: str) -> float:
        """The round trip the client measured (through the relay for a relayed node), else a last resort's."""
        if peer in self.rtt:
            return self.rtt[peer]
        record = self.records.get(peer)
        return 2 * UNMEASURED_RTT if record is not None and is_relayed(record) else UNMEASURED_RTT

    def one_ways(self, peers: list[str]) -> tuple[np.ndarray, Between]:
        """Between the client and each of `peers`, half its round trip; between them, `Between`."""
        client = np.array([self.client_rtt(p) for p in peers])
        index = {p: i for i, p in enumerate(peers)}
        rows, cols, seconds = [], [], []
        for i, p in enumerate(peers):
            if (record := self.records.get(p)) is not None:
                for q, ms in record.rtt_ms.items():
                    if (j := index.get(q)) is not None:
                        rows.append(i)
                        cols.append(j)
                        seconds.append(ms / 1000)
        claims = np.full((len(peers), len(peers)), np.inf)
        both = (np.array(rows + cols, dtype=int), np.array(cols + rows, dtype=int))
        np.minimum.at(claims, both, np.array(seconds + seconds))
        return client / 2, Between(client, claims)


class Between:
    """One-way delays between nodes (row: from, column: to), computed only where the sweep asks (indexed
    like the matrix, `between[np.ix_(rows, cols)]`): the claimed round trip (either node's record's
    `rtt_ms`, the lower) clamped between the bounds the client's own round trips imply, or the upper
    bound without a claim, halved. A sweep reads a few nodes at each boundary, not every pair."""

    def __init__(self, client_rtt: np.ndarray, claims: np.ndarray) -> None:
        self.client_rtt, self.claims = client_rtt, claims

    def __getitem__(self, key: tuple) -> np.ndarray:
        rows, cols = key
        a, b = self.client_rtt[rows], self.client_rtt[cols]
        claimed, high = self.claims[rows, cols], a + b
        return np.where(np.isfinite(claimed), np.clip(claimed, np.abs(a - b), high), high) / 2


def usable(records: Iterable[ServerRecord], banned: Container[str] = (), max_length: int = 1) -> list[ServerRecord]:
    return [r for r in records if r.is_serving and r.version == PROTOCOL_VERSION and r.peer_id not in banned
            and r.max_session_length >= max_length]


def batch_figures(record: ServerRecord) -> tuple[int, float]:
    """(batch, tokens/s of all its sessions together) the node announced; (1, its single-stream figure)
    for a record without them. A batch is never slower than one session alone, whatever it claims."""
    if record.batch_size > 1 and record.batch_throughput > 0:
        return record.batch_size, max(record.batch_throughput, record.throughput)
    return 1, record.throughput


def batch_step(sessions: int, single: float, batch: int, batched: float, blocks: int = 1) -> float:
    """Seconds per block of a step with `sessions` sessions through a span of `blocks`, from a node's two
    figures (tokens/s through it alone, and of `batch` sessions together, no more than `batch` times as
    many): linear between the two, and on the ray through the second beyond it. Never cheaper than a
    roofline step (flat while the weights' reads hide the compute, then linear in the batch): a convex
    cost lies under its chords."""
    if sessions >= batch:
        return sessions / (batched * blocks)
    return (1 + (sessions - 1) * (batch / batched * single - 1) / (batch - 1)) / (single * blocks)


def compute_costs(servers: list[ServerRecord]) -> dict[str, float]:
    """Seconds per block for each server's next session: its step at batch (load + 1) over its span.
    Both announced figures count up to CLAIM_CAP times the candidates' median of each, so a node
    claiming an absurd batch gain is priced as a node that fast, whose step still grows with its load."""
    if not servers:
        return {}
    figures = [batch_figures(r) for r in servers]
    cap = CLAIM_CAP * statistics.median(r.throughput for r in servers)
    batch_cap = CLAIM_CAP * statistics.median(batched for _, batched in figures)
    costs = {}
    for r, (batch, batched) in zip(servers, figures):
        single = max(min(r.throughput, cap), MIN_THROUGHPUT)
        batched = max(min(batched, batch_cap, batch * single), single)
        costs[r.peer_id] = batch_step(r.active_sessions + 1, single, batch, batched, r.end - r.start)
    return costs


def hop_waits(servers: list[ServerRecord], per_block: Mapping[str, float]) -> dict[str, float]:
    """Seconds a step waits at each node for the iteration in progress, before its own: half the node's step
    through its whole span at its load. Its scheduler batches whatever arrives while it computes
    (node/scheduler.py), so a busy node makes each hop wait; an idle one (no session) runs a step at once.
    Unpriced, three busy home GPUs pushing to each other looked cheaper than one A100 (the simulator's
    hetero-200: planned 0.118 s against 0.126 s a token, decoded at 0.200 against 0.150 s)."""
    return {r.peer_id: (r.end - r.start) * per_block[r.peer_id] / 2 if r.active_sessions else 0.0 for r in servers}


def _covering(servers: list[ServerRecord], boundaries: list[int], end: int, fixed: Callable[[str], float],
              per_block: Mapping[str, float]) -> dict[int, list[ServerRecord]]:
    """For each boundary, the servers covering it, in planning order, less those an earlier one covering it
    beats there (a hop's fixed cost and a cost per block no higher, reaching as far): relayed, they lead to
    the same states, where the earlier one's cost is never higher, so they never improve one. Saves most of
    the relayed search in a big swarm.

    One sweep over the boundaries: a server arrives at its first one and stays until its end. A beaten
    server stays beaten (its victor reaches as far, so covers every later boundary it covers), so each
    arrival is compared once with the servers kept so far, not each boundary's servers with each other."""
    arriving: dict[int, list[int]] = {p: [] for p in boundaries}
    for i, r in enumerate(servers):
        arriving[boundaries[max(0, bisect.bisect_right(boundaries, r.start) - 1)]].append(i)
    reach = [min(r.end, end) for r in servers]
    figures = [(fixed(r.peer_id), per_block[r.peer_id], reach[i]) for i, r in enumerate(servers)]
    kept: list[int] = []  # indices into servers, in planning order
    covering: dict[int, list[ServerRecord]] = {}
    for p in boundaries:
        kept = [k for k in kept if reach[k] > p]
        for i in arriving[p]:
            link, cost, far = figures[i]
            if any(k < i and figures[k][0] <= link and figures[k][1] <= cost and figures[k][2] >= far for k in kept):
                continue
            kept = [k for k in kept if not (k > i and link <= figures[k][0] and cost <= figures[k][1]
                                            and far >= figures[k][2])]
            kept.append(i)
        kept.sort()
        covering[p] = [servers[k] for k in kept]
    return covering


def has_room(record: ServerRecord, max_length: int) -> bool:
    """Whether the node announced enough free cache to hold a session of `max_length` tokens. Only a
    hint: the figure is as old as the record, and a full node may still evict an idle session."""
    return record.cache_tokens_left >= max_length


def plan_route(records: Iterable[ServerRecord], start: int, end: int, *, rtt: Mapping[str, float] | None = None,
               banned: Container[str] = (), max_length: int = 1, push: bool = False,
               measured_only: bool = False, with_room: bool = False, ring: bool = False) -> list[Hop]:
    """The cheapest chain of hops covering [start, end) for sessions of `max_length` tokens;
    NoRouteError naming the first gap if none. `measured_only` skips nodes without a measured rtt,
    `with_room` those that announced too little free cache for the session (`has_room`); `ring`
    (pushed only): the client rings, so a ring node covering [start, end) alone costs no client legs."""
    rtt = rtt or {}
    all_records = list(records)
    servers = [r for r in usable(all_records, banned, max_length) if r.start < end and r.end > start
               and (not measured_only or r.peer_id in rtt) and (not with_room or has_room(r, max_length))]
    links = Links({r.peer_id: r for r in all_records}, rtt)
    per_block = compute_costs(servers)
    waits = hop_waits(servers, per_block)
    boundaries = sorted({start, end} | {b for r in servers for b in (r.start, r.end) if start < b < end})
    if push:
        alone = np.array([r.ring and r.start <= start and r.end >= end for r in servers] if ring else
                         np.zeros(len(servers)), dtype=bool)
        hops, reached = _pushed(servers, boundaries, end, links, per_block, waits, alone)
    else:
        hops, reached = _relayed(servers, boundaries, end, links, per_block, waits)
    if hops is None:
        room = f" with room for {max_length} tokens" if with_room else ""
        raise NoRouteError(f"no online node{room} serves block {reached} of [{start}, {end}); "
                           f"{len(servers)} usable node(s){room} cover only part of the model")
    return once_each(hops)


def once_each(hops: list[Hop]) -> list[Hop]:
    """The chain with no node in it twice. The sweeps may leave a slow node for a fast one mid-span and
    board it again after (f, g, f), but a node holds one session per client session (a second open
    replaces the first), so each node's first and last hop are merged with all between them: the node
    serves that whole stretch, its span being contiguous."""
    kept: list[Hop] = []
    for hop in hops:
        seen = next((k for k, h in enumerate(kept) if h.peer_id == hop.peer_id), None)
        if seen is None:
            kept.append(hop)
        else:
            kept[seen:] = [Hop(hop.peer_id, kept[seen].start, hop.end, hop.record)]
    return kept


def _relayed(servers: list[ServerRecord], boundaries: list[int], end: int, links: Links,
             per_block: Mapping[str, float], waits: Mapping[str, float]) -> tuple[list[Hop] | None, int]:
    """The cheapest relayed chain, or None and the furthest boundary reached. Every hop starts and ends
    at the client and goes forward, so the least cost to each boundary is final once the boundaries
    before it are, and a hop boarded at p and left at q costs (least to p) − p·c + rtt + q·c for its
    node's cost c per block: one sweep keeps, per node still reachable, the boundary best boarded at,
    and compares nodes at each boundary, not nodes × the boundaries they reach."""
    def fixed(peer: str) -> float:  # a hop's cost besides its blocks: the round trip, the wait at the node
        return links.client_rtt(peer) + waits[peer]

    covering = _covering(servers, boundaries, end, fixed, per_block)
    far = {r.peer_id: min(r.end, end) for r in servers}
    leaving: dict[int, list[str]] = {}
    for r in servers:
        leaving.setdefault(far[r.peer_id], []).append(r.peer_id)
    least = {boundaries[0]: 0.0}
    came_from: dict[int, tuple[int, ServerRecord]] = {}
    # per node boarded: (least cost to its boarding boundary − that boundary × its cost per block,
    # the boundary, the record, its round trip and wait, its cost per block)
    riding: dict[str, tuple[float, int, ServerRecord, float, float]] = {}
    for q in boundaries:
        if q != boundaries[0]:
            top, pick = float("inf"), None
            for board, p, r, link, per in riding.values():
                if (c := board + link + q * per) < top:
                    top, pick = c, (p, r, link, per)
            for peer in leaving.get(q, ()):
                riding.pop(peer, None)
            if pick is None:
                break
            p, r, link, per = pick
            least[q], came_from[q] = least[p] + link + (q - p) * per, (p, r)
        if q == end:
            hops = []
            while q != boundaries[0]:
                p, r = came_from[q]
                hops.append(Hop(r.peer_id, p, q, r))
                q = p
            return hops[::-1], end
        here = least[q]
        for r in covering[q]:
            peer = r.peer_id
            per = per_block[peer]
            board = here - q * per
            if peer not in riding or board < riding[peer][0]:
                riding[peer] = (board, q, r, fixed(peer), per)
    return None, max(least)


def _pushed(servers: list[ServerRecord], boundaries: list[int], end: int, links: Links,
            per_block: Mapping[str, float], waits: Mapping[str, float], alone: np.ndarray
            ) -> tuple[list[Hop] | None, int]:
    """The cheapest pushed chain, or None and the furthest boundary reached. A hop's cost depends on the
    link from the node before it, but hops still go forward, so one sweep settles the boundaries in turn.
    At boundary q: each node ridden there arrives at the least (cost at boarding p − p·c) + q·c over the
    p it was boarded at, kept per node as the relayed sweep keeps it; each node covering q is boarded at
    the least arrival there plus the link from that arrival (the client's leg at the start), plus its wait:
    a minimum over a matrix of links, computed for all of them at once. At the end, the servers marked
    `alone` compete as rings closed alone: their wait and every block, no client legs."""
    count = len(servers)
    half_rtt, link = links.one_ways([r.peer_id for r in servers])
    per = np.array([per_block[r.peer_id] for r in servers])
    wait = np.array([waits[r.peer_id] for r in servers])
    # boundary indices: a node is boarded at first..last − 1 and arrives at first + 1..last
    first = np.array([max(0, bisect.bisect_right(boundaries, r.start) - 1) for r in servers], dtype=int)
    last = np.array([bisect.bisect_right(boundaries, min(r.end, end)) - 1 for r in servers], dtype=int)
    ride = np.full(count, np.inf)  # per node: least (cost at boarding − boarding boundary · its cost per block)
    boarded_at = np.zeros(count, dtype=int)  # ... the boundary index that came from
    boarded_after = np.full(count, -1)  # ... and the node arriving there before it (−1: the client)
    arrivals: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per boundary: nodes, boarded at, after
    for k, q in enumerate(boundaries):
        arriving = np.flatnonzero((first < k) & (last >= k) & np.isfinite(ride))
        if k and not arriving.size:
            return None, boundaries[k - 1]
        cost = ride[arriving] + q * per[arriving]
        arrivals.append((arriving, boarded_at[arriving], boarded_after[arriving]))
        if q == end:
            final = cost + half_rtt[arriving]
            pick = int(np.argmin(final))
            solo = np.flatnonzero(alone)
            around = wait[solo] + (end - boundaries[0]) * per[solo]
            if solo.size and around.min() < final[pick]:
                r = servers[solo[int(np.argmin(around))]]
                return [Hop(r.peer_id, boundaries[0], end, r)], end
            return _pushed_hops(servers, boundaries, arrivals, pick), end
        boarding = np.flatnonzero((first <= k) & (last > k))
        if k:
            via = cost[:, None] + link[np.ix_(arriving, boarding)]
            best = via.argmin(axis=0)
            board, after = via[best, np.arange(boarding.size)], arriving[best]
        else:
            board, after = half_rtt[boarding], np.full(boarding.size, -1)
        value = board + wait[boarding] - q * per[boarding]
        better = value < ride[boarding]
        moved = boarding[better]
        ride[moved], boarded_at[moved], boarded_after[moved] = value[better], k, after[better]
    raise AssertionError("the sweep ends at the last boundary, which is `end`")


def _pushed_hops(servers: list[ServerRecord], boundaries: list[int],
                 arrivals: list[tuple[np.ndarray, np.ndarray, np.ndarray]], pick: int) -> list[Hop]:
    """The chain ending with the `pick`-th arrival at the last boundary, read back through each hop's
    boarding boundary and the arrival it was boarded after."""
    hops: list[Hop] = []
    k = len(boundaries) - 1
    while True:
        nodes, boarded_at, after = arrivals[k]
        r, p = servers[nodes[pick]], int(boarded_at[pick])
        hops.append(Hop(r.peer_id, boundaries[p], boundaries[k], r))
        if after[pick] < 0:
            return hops[::-1]
        k, pick = p, int(np.flatnonzero(arrivals[p][0] == after[pick])[0])


def plan_measured_first(records: Iterable[ServerRecord], start: int, end: int, *, rtt: Mapping[str, float],
                        banned: Container[str] = (), max_length: int = 1, push: bool = False,
                        with_room: bool = True, ring: bool = False) -> list[Hop]:
    """The best chain over nodes the client measured that announce room for the session (`has_room`);
    the rest (unmeasured, or announcing a fuller cache) only when those do not cover. A node that filled
    up since its record refuses the open, and the client bans it and plans again: on the simulated
    1,000-node swarm that was most of the plans. A full node may still evict an idle session, so a swarm
    with no room left is tried as before rather than given up on. (`with_room=False`: the rule before,
    which the simulator measures against.)"""
    records = list(records)
    try:
        return plan_route(records, start, end, rtt=rtt, banned=banned, max_length=max_length, push=push,
                          measured_only=True, with_room=with_room, ring=ring)
    except NoRouteError:
        return plan_route(records, start, end, rtt=rtt, banned=banned, max_length=max_length, push=push, ring=ring)
