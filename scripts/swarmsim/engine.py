"""The event loop: volunteers join, serve, move and leave; clients plan chains, decode and fail over.

Events (joins, departures, rebalancing checks, client arrivals, retries) run in time order on a
virtual clock. Decoding is a fluid between ticks of `tick_s`: every session's time per token is
re-derived each tick from its chain (round trips; at each node, its continuous batching as the
daemon's scheduler runs it: the wait for the iteration in progress, the node's roofline step at the
batch of tokens that reach it while one iteration computes, and that batch's outputs on its uplink:
batching.py), and tokens accrue at that rate. A node's uplink sends at most its bandwidth: where the
sessions through one would need more, they all slow down until it keeps up (a queue on the uplink, as a
closed network's bottleneck). Batching is otherwise free, which favours the simulated swarm; prefill and
replays delay a session but load no node.

Policies are the production code: where a node sits (`best_start`, `should_move`, `move_chance`,
`rebalance_delay`, `blocks_for_budget`) and how it claims a move before making it (`claim_holds`,
`claim_wait`, `cooled_down`; `claims=False` plays the rule before claims, to measure herding), which chain a client takes (`plan_measured_first`, as `SwarmView.plan` calls
it), how it punishes a failing node (`Bans.penalize`, the runner's ban-or-excuse), when it gives up
or waits for a ban to end (`coverage_wake`, `DEFAULT_DEADLINE`). Clients see only the DHT: records
nodes announced (every `announce_period`, and at each change of state), each visible `dht_lag_s`
after it was stored (a loaded DHT's reads lag); a crashed node's record stays until it expires at
three periods, as hivemind's do.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Callable

from node.freshness import load_moved
from node.local_swarm import even_spans
from node.neighbours import announced, to_measure
from node.selection import (best_start, blocks_for_budget, cache_tokens_for_budget, claim_holds, claim_wait,
                            cooled_down, coverage, move_chance, rebalance_delay, reserve_tokens, serves, should_move)
from node.uplink import MBIT, through_uplink
from routing.chain import DEFAULT_DEADLINE, busy_for, coverage_wake
from routing.errors import NoRouteError
from routing.planner import plan_measured_first
from routing.records import ServerRecord
from routing.view import Bans
from routing.wire import PROTOCOL_VERSION

from . import batching, churn, network, workload
from .hardware import MESSAGE_CPU_S, MESSAGE_S, PROFILES, Model, read_time, step_time
from .lab import Lab
from .yardstick import Yardstick

PLACEMENTS = ("petals", "random")  # "even" too: LocalSwarm's split, never moved (the measured runs)
DISK_BYTES_S = 2e9  # loading blocks a volunteer already holds


@dataclass
class Config:
    model: Model
    nodes: int  # volunteers present on average (and at the start)
    hardware_mix: dict[str, float]
    client_rate: float  # sessions per second
    clients: int = 0  # also a closed loop of this many clients, each opening a session when its last ends or fails
    hours: float = 1.0
    mean_lifetime_s: float = 3 * 3600.0  # math.inf: nobody leaves or joins
    crash_fraction: float = 0.5  # departures that are crashes; the rest drain politely
    nat_fraction: float = 0.4
    placement: str = "petals"
    seed: int = 0
    push: bool = False
    tick_s: float = 2.0
    bound_every_s: float = 60.0
    announce_period: float = 30.0  # node/config.py defaults from here down
    rebalance_period: float = 60.0
    drain_grace: float = 30.0
    cache_tokens: int = 8192
    memory_fraction: float = 0.8  # of free memory, as node/server.py budgets it
    lab: Lab | None = None  # one machine or a network lab instead of the internet (scripts/swarmsim/lab.py)
    client_s: float = 0.0  # a client's own seconds per token (its head); not modelled on the internet
    message_s: float = MESSAGE_S  # our stack's latency per message sent
    message_cpu_s: float = MESSAGE_CPU_S  # CPU per message, all processes together (counts on a shared host)
    spans: tuple[tuple[int, int], ...] = ()  # where the first nodes start (then placed by `placement`)
    claims: bool = True  # moves are claimed first (node/selection.py); False: the rule before, which herded
    dht_lag_s: float = 0.0  # seconds before an announcement is visible to readers
    eager_announce: bool = True  # also when the load moves (node/freshness.py); False: every period only
    grow_cache: bool = False  # a pool of all the cache its memory holds beside its blocks (cache_tokens_for_budget)
    grown_reserve: bool = True  # a growing node sizes its span for GROWN_RESERVE_TOKENS (reserve_tokens); False: its pool
    room_rule: bool = True  # plan around nodes announcing no room, avoid a full one briefly (has_room, Bans.busy)
    batch_figures: bool = True  # nodes announce a batch's throughput too; False: single-stream only, as before
    measured_batch: int = 0  # the batch they measure it at; 0: the batch their pool holds of mean-length sessions
    priced_uplinks: bool = True  # volunteers give --upload-mbps, folded into those figures (node/uplink.py)
    ring: str = ""  # which volunteers hold the head (out of their memory): "every" (--ring), "whole" (--ring auto:
    # those whose memory holds every block beside it, to ring alone), "" none; chains that close a ring decode as one


class SimNode:
    def __init__(self, peer_id: str, hw_name: str, cfg: Config, rng: random.Random) -> None:
        self.peer_id, self.hw = peer_id, PROFILES[hw_name]
        datacenter = hw_name == "a100"
        self.endpoint = network.Endpoint(network.pick_region(rng))
        if not datacenter and rng.random() < cfg.nat_fraction:
            self.endpoint.relay = network.pick_region(rng)
        self.upload = network.DATACENTER_MBPS * 1e6 / 8 if datacenter else network.home_upload(rng)
        self.download = 5 * self.upload
        m = cfg.model
        budget = int(self.hw.memory_gb * 1e9 * cfg.memory_fraction)
        reserve = reserve_tokens(cfg.cache_tokens, cfg.grow_cache and cfg.grown_reserve, m.block_bytes,
                                 m.kv_bytes_per_token)
        # --ring: the embeddings and LM head whatever the span, out of its budget (node/ring.py)
        self.ring = cfg.ring == "every" or cfg.ring == "whole" and blocks_for_budget(
            budget - m.head_bytes, m.block_bytes, reserve * m.kv_bytes_per_token, m.num_blocks) == m.num_blocks
        if self.ring:
            budget -= m.head_bytes
        self.head_s = read_time(self.hw, m.head_bytes / 2)  # the LM head's read, the sampler's step beyond its blocks
        self.length = blocks_for_budget(budget, m.block_bytes, reserve * m.kv_bytes_per_token, m.num_blocks)
        # the most cache its memory holds beside its blocks: the bound's, whatever the pool (`Config.grow_cache`)
        self.cache_room = cache_tokens_for_budget(budget, m.block_bytes, m.kv_bytes_per_token, self.length,
                                                  cfg.cache_tokens)
        self.start = self.end = 0
        self.state = "loading"  # loading, online, draining, gone
        self.crashed = False
        self.moving_to: int | None = None
        self.claim: int | None = None  # a move announced, not yet made
        self.moved_at: float | None = None
        self.drain_until = 0.0
        self.epoch = 0  # changes whenever the node stops serving its span
        self.sessions: dict[Session, None] = {}  # dicts, not sets: runs must not depend on id()
        self.cache_used = 0
        self.held: set[int] = set()  # blocks on its disk
        self.next_announce = 0.0
        self.shown_sessions = 0  # in the record last announced (node/freshness.py)
        self.neighbours: dict[str, float] = {}  # round trips to next-block nodes, pushed runs only (node/neighbours.py)
        self.iteration = batching.Iteration(1.0, 0.0, 0.0, 0.0)  # this tick's
        self.rate = 0.0  # tokens/s through it at the last tick
        self.queued = 1.0  # how much slower its uplink's queue makes the sessions through it (≥ 1), this tick
        # Seconds per block-token at the biggest batch it could ever run, its cache full of two-token
        # sessions: the bound's compute (bound.py), never above what a chain gets; its caches bind first.
        batch = max(1, self.cache_room // 2)
        self.cost = step_time(self.hw, m, batch, self.cache_room) / batch
        self.step_one = step_time(self.hw, m, 1, 1)  # a block's step for one token: the fastest there is
        self.cache_limit = self.cache_room if cfg.grow_cache else cfg.cache_tokens
        # what the node measures and announces: decode tokens/s through its span of one session, and of the
        # batch its pool holds of mean-length sessions (routing/planner.py prices its load from the two)
        blocks, mean = min(self.length, m.num_blocks), workload.PROMPT_MEAN + workload.ANSWER_MEAN
        self.announced = 1.0 / (blocks * step_time(self.hw, m, 1, workload.PROMPT_MEAN))
        self.batch = max(1, cfg.measured_batch or self.cache_limit // mean) if cfg.batch_figures else 1
        full = blocks * step_time(self.hw, m, self.batch, self.batch * workload.PROMPT_MEAN)
        self.batch_announced = self.batch / full if self.batch > 1 else 0.0
        if cfg.priced_uplinks:
            mbps = self.upload / MBIT
            self.announced = through_uplink(self.announced, m.hidden_bytes, mbps)
            self.batch_announced = through_uplink(self.batch_announced, m.hidden_bytes, mbps)

    def record(self, state: str) -> ServerRecord:
        return ServerRecord(peer_id=self.peer_id, state=state, start=self.start, end=self.end, moving_to=self.claim,
                            throughput=self.announced, dtype="float16", device=self.hw.name,
                            cache_tokens_left=max(0, self.cache_limit - self.cache_used), version=PROTOCOL_VERSION,
                            active_sessions=len(self.sessions), max_session_length=self.cache_limit,
                            batch_size=self.batch, batch_throughput=self.batch_announced,
                            rtt_ms=announced(self.neighbours), ring=self.ring)


@dataclass(eq=False)
class Session:
    peer_id: str
    endpoint: network.Endpoint
    prompt: int
    answer: int
    arrived: float
    bans: Bans
    hops: list[tuple[SimNode, int, int, int]] = field(default_factory=list)  # node, start, end, epoch
    tokens: float = 0.0
    ready_at: float = float("inf")  # decoding proceeds from here (after prefill or a replay)
    first_token_at: float | None = None
    decode_started: float | None = None
    give_up_at: float = 0.0
    waiting: bool = False
    failovers: int = 0
    closed_loop: bool = False  # opened by one of `Config.clients`, which opens the next when it ends

    @property
    def length(self) -> int:
        return self.prompt + self.answer


@dataclass
class Metrics:
    tokens: float = 0.0
    offered: float = 0.0  # answer tokens the sessions that arrived asked for
    bound_token_s: float = 0.0  # ∫ placement bound dt
    best_token_s: float = 0.0
    batched_token_s: float = 0.0  # ∫ the bound with batching inside (batch_bound.py) dt
    uncovered_block_s: float = 0.0
    energy_j: float = 0.0
    done: int = 0
    failed: int = 0
    failed_with_cover: int = 0  # failed although the nodes online covered the model
    failovers: int = 0
    moves: int = 0
    announces: int = 0  # records stored by online or draining nodes
    time_per_token: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    # sampled every `bound_every_s`: t, tokens/s since the last sample, the bound, uncovered blocks
    series: list[tuple[float, float, float, int]] = field(default_factory=list)
    servers: list[list[int]] = field(default_factory=list)  # per sample, servers online per block

    def summary(self, seconds: float) -> dict[str, float]:
        def pct(xs: list[float], q: float) -> float:
            return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else float("nan")
        return {"tokens_s": self.tokens / seconds, "offered_s": self.offered / seconds, "bound_s": self.bound_token_s / seconds,
                "best_bound_s": self.best_token_s / seconds, "batched_s": self.batched_token_s / seconds,
                "of_batched": self.tokens / self.batched_token_s if self.batched_token_s else float("nan"),
                "of_bound": self.tokens / self.bound_token_s if self.bound_token_s else float("nan"),
                "uncovered_block_s": self.uncovered_block_s, "sessions": self.done, "failed": self.failed,
                "failed_with_cover": self.failed_with_cover, "failovers": self.failovers, "moves": self.moves,
                "announces": self.announces,
                "tpt_p50": pct(self.time_per_token, 50), "tpt_p95": pct(self.time_per_token, 95),
                "ttft_p50": pct(self.first_token, 50), "ttft_p95": pct(self.first_token, 95),
                "j_per_token": self.energy_j / self.tokens if self.tokens else float("nan")}


class Simulation:
    def __init__(self, cfg: Config) -> None:
        if cfg.placement not in (*PLACEMENTS, "even"):
            raise ValueError(f"placement must be one of {PLACEMENTS}")
        self.cfg, self.model = cfg, cfg.model
        self.now = 0.0
        self.rng = random.Random(cfg.seed)
        self.nodes: dict[str, SimNode] = {}
        self.records: dict[str, ServerRecord] = {}  # the DHT
        self._coverage: list[float] | None = None  # coverage(records), until a record changes where it counts
        self._by_block: list[list[str]] | None = None  # per block, the peers whose records span it, until one moves
        self.announced_at: dict[str, float] = {}
        self.sessions: dict[Session, None] = {}
        self.metrics = Metrics()
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._region_rtt: dict[str, dict[str, float]] = {}  # a client's round trip to each peer, by its region
        self._bound = (0.0, 0.0, 0.0)
        self._sampled = (0.0, 0.0)  # (time, tokens) at the last sample
        self.departures = 0
        spans = cfg.spans or (even_spans(cfg.model.num_blocks, cfg.nodes) if cfg.placement == "even" else ())
        self._spans = iter(spans)
        lab = cfg.lab
        self.client_upload = network.CLIENT_UPLOAD if lab is None else lab.bytes_s
        self.yardstick = Yardstick(cfg, self._link_rtt, self.client_upload)

    # ---- the event loop ------------------------------------------------------------------------

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), action))

    def clock(self) -> float:
        return self.now

    def run(self) -> dict[str, float]:
        cfg = self.cfg
        for _ in range(cfg.nodes):
            self._join(self._new_node(), loaded=True)
        if cfg.lab is not None:
            for _ in range(cfg.lab.sessions):
                self._open(cfg.lab.prompt, cfg.lab.answer)
        for _ in range(cfg.clients):  # they come in over the first minute, not all at once
            self.at(self.rng.uniform(0, 60), self._reopen)
        if cfg.client_rate > 0:
            self.at(workload.next_arrival(self.rng, cfg.client_rate), self._arrive)
        if not math.isinf(cfg.mean_lifetime_s):
            self.at(self.rng.expovariate(cfg.nodes / cfg.mean_lifetime_s), self._volunteer_arrives)
        end = cfg.hours * 3600
        t = 0.0
        while t < end:
            self._run_events_until(t)
            self._tick(t, min(cfg.tick_s, end - t))
            t += cfg.tick_s
        return self.metrics.summary(end)

    def _run_events_until(self, t: float) -> None:
        while self._events and self._events[0][0] <= t:
            when, _, action = heapq.heappop(self._events)
            self.now = max(self.now, when)
            action()
        self.now = t

    # ---- volunteers ------------------------------------------------------------------------------

    def _new_node(self) -> SimNode:
        mix = self.cfg.hardware_mix
        node = SimNode(f"node{next(self._ids)}", self.rng.choices(list(mix), list(mix.values()))[0], self.cfg, self.rng)
        if self.cfg.lab is not None:
            node.upload = node.download = self.client_upload
        self.nodes[node.peer_id] = node
        return node

    def _volunteer_arrives(self) -> None:
        self._join(self._new_node(), loaded=False)
        rate = self.cfg.nodes / self.cfg.mean_lifetime_s  # arrivals balance departures on average
        self.at(self.now + self.rng.expovariate(rate), self._volunteer_arrives)

    def _join(self, node: SimNode, loaded: bool) -> None:
        n = self.model.num_blocks
        length = min(node.length, n)
        if (span := next(self._spans, None)) is not None:
            start, end = span
            length = node.length = end - start
        elif self.cfg.placement == "petals":
            start = best_start(self.coverage(), length)
        else:
            start = self.rng.randint(0, n - length)
        node.start, node.end = start, start + length
        if not math.isinf(self.cfg.mean_lifetime_s):
            stay = (churn.residual_lifetime if loaded else churn.lifetime)(self.rng, self.cfg.mean_lifetime_s)
            self.at(self.now + stay, lambda: self._leave(node))
        if loaded:
            node.held = set(range(node.start, node.end))
            self._online(node)
        else:
            self.at(self.now + self._load_time(node), lambda: self._online(node))

    def _load_time(self, node: SimNode) -> float:
        span = set(range(node.start, node.end))
        fetched = len(span - node.held) * self.model.block_bytes / node.download
        node.held |= span
        return fetched + len(span) * self.model.block_bytes / DISK_BYTES_S

    def _online(self, node: SimNode) -> None:
        if node.state != "loading":  # it left while loading
            return
        node.state = "online"
        self._measure(node)
        self._announce(node)
        if self.cfg.placement == "petals":
            self.at(self.now + rebalance_delay(self.cfg.rebalance_period, self.rng), lambda: self._rebalance(node))

    def _measure(self, node: SimNode) -> None:
        """Before each periodic announcement, a node pings the next-block nodes `to_measure` picks, as
        `Node._measure_and_announce`, and announces the round trips; only pushed chains are planned with them."""
        if not self.cfg.push or node.end >= self.model.num_blocks:
            return
        if self._by_block is None:
            self._by_block = [[] for _ in range(self.model.num_blocks)]
            for peer, r in self.records.items():
                for b in range(r.start, r.end):
                    self._by_block[b].append(peer)
        nexts = to_measure((self.records[p] for p in self._by_block[node.end]), node.peer_id, node.end, node.neighbours)
        node.neighbours = {r.peer_id: self._link_rtt(node.endpoint, self.nodes[r.peer_id].endpoint) for r in nexts}

    def _announce(self, node: SimNode) -> None:
        """Store the node's record as `Node._announce` does; a node loading blocks it moved to announces
        them `joining` (with claims), one joining the swarm or leaving it takes its record away."""
        state = {"online": "online", "draining": "draining", "loading": "offline", "gone": "offline"}[node.state]
        if state == "offline" and self.cfg.claims and node.state == "loading" and node.moved_at is not None:
            state = "joining"
        record = None if state == "offline" else node.record(state)
        if record is not None:
            node.next_announce = self.now + self.cfg.announce_period
            node.shown_sessions = record.active_sessions
            self.metrics.announces += 1
        if self.cfg.dht_lag_s > 0:
            self.at(self.now + self.cfg.dht_lag_s, lambda: self._store(node.peer_id, record))
        else:
            self._store(node.peer_id, record)

    def _store(self, peer: str, record: ServerRecord | None) -> None:
        old = self.records.get(peer)
        if record is None:
            self.records.pop(peer, None)
            self.announced_at.pop(peer, None)
        else:
            self.records[peer] = record
            self.announced_at[peer] = self.now
        if (old is None) != (record is None) or (old and record and (serves(old), old.throughput) != (
                serves(record), record.throughput)):
            self._coverage = None
        if (old is None) != (record is None) or (old and record and (old.start, old.end) != (record.start, record.end)):
            self._by_block = None

    def coverage(self) -> list[float]:
        """`coverage` of the DHT's records, kept between the changes that move it (announcements mostly
        refresh loads): a thousand nodes' rebalancing checks would each sum a thousand records."""
        if self._coverage is None:
            self._coverage = coverage(self.records.values(), self.model.num_blocks)
        return self._coverage

    def _others(self, node: SimNode) -> list[float]:
        """The coverage without `node`'s record, as `should_move` would compute it."""
        others = list(self.coverage())
        stored = self.records.get(node.peer_id)
        span = serves(stored) if stored is not None else None
        if stored is not None and span is not None:
            for b in range(*span):
                others[b] -= stored.throughput
        return others

    def _view(self, node: SimNode) -> list[ServerRecord]:
        """The DHT as `node` reads it: everyone's records, its own as it is now."""
        return [*(r for p, r in self.records.items() if p != node.peer_id), node.record("online")]

    def _rebalance(self, node: SimNode) -> None:
        """`Node._rebalance`: check, claim, wait for others' claims, then move or yield."""
        if node.state != "online":
            return
        cfg = self.cfg
        again = lambda: self.at(self.now + rebalance_delay(cfg.rebalance_period, self.rng),  # noqa: E731
                                lambda: self._rebalance(node))
        if cfg.claims and not cooled_down(self.now, node.moved_at, cfg.rebalance_period):
            return again()
        me = node.record("online")
        target = should_move((), self.model.num_blocks, me, others=self._others(node))
        if target is None or self.rng.random() >= move_chance(self.records.values(), me):
            return again()
        if not cfg.claims:
            return self._move(node, target)
        node.claim = target
        self._announce(node)

        def confirm() -> None:
            if node.state != "online" or node.claim is None:
                return
            view = self._view(node)
            if claim_holds(view, self.model.num_blocks, view[-1]):
                return self._move(node, target)
            node.claim = None
            self._announce(node)
            again()

        self.at(self.now + claim_wait(cfg.announce_period), confirm)

    def _move(self, node: SimNode, target: int) -> None:
        self.metrics.moves += 1
        node.moving_to = target
        self._drain(node)

    def _leave(self, node: SimNode) -> None:
        if node.state == "gone":
            return
        self.departures += 1
        if node.state == "loading":  # announced nothing yet: just goes
            self._gone(node, announce=False)
        elif self.rng.random() < self.cfg.crash_fraction:
            node.crashed = True
            self._gone(node, announce=False)
        else:
            node.moving_to = node.claim = None
            self._drain(node)

    def _drain(self, node: SimNode) -> None:
        """Refuse new sessions, let live ones finish for up to `drain_grace` (as `Serving.drain`)."""
        node.drain_until = self.now + self.cfg.drain_grace
        node.state = "draining"
        self._announce(node)

    def _drained(self, node: SimNode) -> None:
        if node.moving_to is None:
            self._gone(node, announce=True)
            return
        node.epoch += 1
        node.state = "loading"
        node.start, node.end = node.moving_to, node.moving_to + (node.end - node.start)
        node.moving_to = node.claim = None
        node.moved_at = self.now
        self._announce(node)
        self.at(self.now + self._load_time(node), lambda: self._online(node))

    def _gone(self, node: SimNode, announce: bool) -> None:
        node.state = "gone"
        node.epoch += 1
        if announce:
            self._announce(node)

    # ---- clients -------------------------------------------------------------------------------

    def _arrive(self) -> None:
        self._open(*workload.lengths(self.rng))
        self.at(self.now + workload.next_arrival(self.rng, self.cfg.client_rate), self._arrive)

    def _reopen(self) -> None:
        """A closed-loop client's next session (`Config.clients`)."""
        self._open(*workload.lengths(self.rng), closed_loop=True)

    def _open(self, prompt: int, answer: int, closed_loop: bool = False) -> None:
        s = Session(f"client{next(self._ids)}", network.Endpoint(network.pick_region(self.rng)), prompt, answer,
                    self.now, Bans(clock=self.clock), closed_loop=closed_loop)
        s.give_up_at = self.now + DEFAULT_DEADLINE
        self.metrics.offered += answer
        self.sessions[s] = None
        self._repair(s)

    def _client_rtt(self, s: Session, peer: str) -> float:
        known = self._region_rtt.setdefault(s.endpoint.region, {})
        if peer not in known:
            known[peer] = self._link_rtt(s.endpoint, self.nodes[peer].endpoint)
        return known[peer]

    def _link_rtt(self, a: network.Endpoint, b: network.Endpoint) -> float:
        return network.rtt(a, b) if self.cfg.lab is None else self.cfg.lab.rtt_s

    def _plan(self, s: Session, start: int, end: int) -> list[tuple[SimNode, int, int, int]] | None:
        """A chain over [start, end) whose nodes took the session, as `RemoteRunner._open_chain` gets one;
        None after scheduling a retry (or failing the session) when no chain covers it now."""
        while True:
            rtt = self._region_rtt.setdefault(s.endpoint.region, {})  # the view pings every node it reads
            for p in self.records.keys() - rtt.keys():
                rtt[p] = self._link_rtt(s.endpoint, self.nodes[p].endpoint)
            try:
                hops = plan_measured_first(self.records.values(), start, end, rtt=rtt, banned=s.bans.active(),
                                           max_length=s.length, push=self.cfg.push, with_room=self.cfg.room_rule,
                                           ring=bool(self.cfg.ring) and (start, end) == (0, self.model.num_blocks))
            except NoRouteError:
                wake = coverage_wake(self.now, s.give_up_at, s.bans.next_expiry(), await_coverage=False)
                if wake is None:
                    self._fail(s)
                else:
                    s.waiting = True
                    self.at(wake, lambda: self._repair(s))
                return None
            chain = [(self.nodes[h.peer_id], h.start, h.end) for h in hops]
            refused = [(n, why) for n, _, _ in chain if (why := self._refusal(n, s)) is not None]
            if not refused:
                for n, _, _ in chain:
                    n.sessions[s] = None
                    n.cache_used += s.length
                return [(n, a, b, n.epoch) for n, a, b in chain]
            for n, why in refused:
                if why == "busy" and self.cfg.room_rule:  # SwarmView re-reads the DHT every announce period
                    s.bans.busy(n.peer_id, busy_for(self.cfg.announce_period, self.now, s.give_up_at))
                else:
                    s.bans.penalize(n.peer_id, why != "draining")
            if self.now >= s.give_up_at and any(why != "busy" for _, why in refused):  # `_may_retry`
                self._fail(s)
                return None

    def _refusal(self, node: SimNode, s: Session) -> str | None:
        """None if `node` takes the session, else why not: "gone" (unreachable: a ban, `deserves_ban`),
        "draining" (excusable), "busy" (a full cache: `is_busy`, avoided briefly; banned with the rule before)."""
        if node.state == "gone" or node.state == "loading":
            return "gone"
        if node.state == "draining":
            return "draining"
        return "busy" if node.cache_used + s.length > node.cache_limit else None

    def _release(self, s: Session, node: SimNode) -> None:
        if s in node.sessions:
            del node.sessions[s]
            node.cache_used -= s.length

    def _repair(self, s: Session) -> None:
        """Open the chain, or replace its broken spans (as `RemoteRunner._replace`), then replay."""
        if s not in self.sessions:
            return
        s.waiting = False
        if not s.hops:
            hops = self._plan(s, 0, self.model.num_blocks)
            if hops is None:
                return
            s.hops = hops
            s.ready_at = self.now + self._prefill(s, hops, s.prompt)
            return
        i = 0
        while i < len(s.hops):
            node, a, b, epoch = s.hops[i]
            if node.epoch == epoch:
                i += 1
                continue
            self._release(s, node)
            if epoch != -1:  # newly broken: by a crash, or closed at the end of a drain (excusable)
                s.bans.penalize(node.peer_id, deserved=node.crashed)
                s.failovers += 1
                self.metrics.failovers += 1
                s.hops[i] = (node, a, b, -1)
                s.give_up_at = self.now + DEFAULT_DEADLINE
            new = self._plan(s, a, b)
            if new is None:
                return
            s.hops[i:i + 1] = new
            s.ready_at = max(s.ready_at, self.now) + self._prefill(s, new, s.prompt + int(s.tokens))
            i += len(new)

    def _prefill(self, s: Session, hops: list[tuple[SimNode, int, int, int]], tokens: int) -> float:
        """Seconds to send `tokens` through fresh spans (the prompt, or a replay after failover) and get
        the next token's logits back: the same trips as a decoded token, at `tokens` rows."""
        return self._trip(s, [(n, a, b) for n, a, b, _ in hops], tokens * self.model.hidden_bytes,
                          [(b - a) * step_time(n.hw, self.model, tokens, tokens) for n, a, b, _ in hops])

    def _trip(self, s: Session, hops: list[tuple[SimNode, int, int]], wire: float, compute: list[float]) -> float:
        """Seconds for one step of `wire` bytes per hop through `hops`, each computing its `compute`
        seconds: relayed, a round trip to the client per hop; pushed, node to node and back once."""
        cfg = self.cfg
        if not cfg.push or len(hops) == 1:
            return cfg.client_s + sum(self._client_rtt(s, n.peer_id) + wire / self.client_upload + wire / n.upload
                                      + 2 * cfg.message_s + c for (n, _, _), c in zip(hops, compute))
        first, last = hops[0][0], hops[-1][0]
        t = (cfg.client_s + (self._client_rtt(s, first.peer_id) + self._client_rtt(s, last.peer_id)) / 2
             + wire / self.client_upload + (len(hops) + 1) * cfg.message_s)
        for k, ((n, _, _), c) in enumerate(zip(hops, compute)):
            t += wire / n.upload + c
            if k + 1 < len(hops):
                t += self._link_rtt(n.endpoint, hops[k + 1][0].endpoint) / 2
        return t

    def _fail(self, s: Session) -> None:
        for node, *_ in s.hops:
            self._release(s, node)
        del self.sessions[s]
        self.metrics.failed += 1
        if not any(self._uncovered(lambda n: n.state == "online" and n.cache_used + s.length <= n.cache_limit)):
            self.metrics.failed_with_cover += 1
        if s.closed_loop:  # a second later: a swarm that covers nothing must not loop
            self.at(self.now + 1.0, self._reopen)

    def _finish(self, s: Session) -> None:
        for node, *_ in s.hops:
            self._release(s, node)
        del self.sessions[s]
        self.metrics.done += 1
        self.metrics.time_per_token.append((self.now - s.decode_started) / s.answer)
        if self.cfg.lab is not None:  # its clients generate back to back
            self._open(self.cfg.lab.prompt, self.cfg.lab.answer)
        elif s.closed_loop:
            self._reopen()

    # ---- a tick of decoding --------------------------------------------------------------------

    def _decode_rates(self, decoding: list[Session], until: float) -> dict[Session, float]:
        """Each decoding session's seconds per token, with every node's iteration (batching.py) at the tokens/s
        that reach it: from the last tick's rates, then once more from the rates those times give. A lab's one
        host runs every process on its few cores, which its concurrent sessions saturate: steps queue at a node
        while others hold the cores, so every session rides every iteration there, as the measured runs show
        (8 sessions make 1.8x the tokens/s of one: calibrate.py)."""
        serving = []
        for node in self.nodes.values():
            active = [s for s in node.sessions if s.ready_at < until]
            if node.state in ("online", "draining") and active:
                serving.append((node, len(active), sum(s.prompt + s.tokens for s in active) / len(active)))
        tpts: dict[Session, float] = {}
        for _ in range(2):
            for node, sessions, context in serving:
                rate = math.inf if self.cfg.lab is not None else node.rate
                node.iteration = batching.iteration(node.hw, self.model, node.end - node.start, sessions, context,
                                                    rate, node.upload, node.iteration.batch)
                node.queued = 1.0
            rates = self._rates({s: self.time_per_token(s) for s in decoding})
            if self.cfg.lab is None:
                for node, *_ in serving:  # each token's output leaves once, on its uplink
                    node.queued = max(1.0, rates.get(node.peer_id, 0.0) * self.model.hidden_bytes / node.upload)
            tpts = {s: self.time_per_token(s) for s in decoding}
            rates = self._rates(tpts)
            for node, *_ in serving:
                node.rate = rates.get(node.peer_id, 0.0)
        if self.cfg.lab is not None and decoding:  # one host's cores shared by all: processor sharing
            demand = sum(self._cpu_per_token(s) / tpt for s, tpt in tpts.items())
            if demand > self.cfg.lab.cores:
                tpts = {s: tpt * demand / self.cfg.lab.cores for s, tpt in tpts.items()}
        return tpts

    @staticmethod
    def _rates(tpts: dict[Session, float]) -> dict[str, float]:
        """Tokens/s through each node, of sessions decoding at `tpts` seconds a token."""
        rates: dict[str, float] = {}
        for s, tpt in tpts.items():
            for n, *_ in s.hops:
                rates[n.peer_id] = rates.get(n.peer_id, 0.0) + 1 / tpt
        return rates

    def time_per_token(self, s: Session) -> float:
        """Seconds per decoded token along the session's chain: at each node, the wait for the iteration in
        progress, its own iteration (its blocks' share), that iteration's outputs on the uplink (in place of
        the one token's bytes); the trips. Times the most any of its nodes' uplinks queue (`SimNode.queued`):
        a chain runs no faster than its slowest uplink lets the sessions sharing it through."""
        hops = [(n, a, b) for n, a, b, _ in s.hops]
        doing = [n.iteration.wait + (b - a) / (n.end - n.start) * n.iteration.step + n.iteration.send
                 for n, a, b in hops]
        if self.cfg.push and hops[0][0].ring and hops[-1][0].ring:  # routing/ring.py closes_ring (one node: alone)
            return max(n.queued for n, _, _ in hops) * self._ring_trip(hops, doing)
        return max(n.queued for n, _, _ in hops) * (self._trip(s, hops, 0.0, doing) + (
            self.model.hidden_bytes / self.client_upload * (1 if self.cfg.push and len(hops) > 1 else len(hops))))

    def _ring_trip(self, hops: list[tuple[SimNode, int, int]], doing: list[float]) -> float:
        """Seconds per token around a ring (routing/ring.py): the last node samples and sends the token to the
        first, so the client is off the path (it checks each step's copy while the ring goes on): each node's
        message and `doing`, the links node to node and last to first, and the sampler's LM head."""
        t = hops[-1][0].head_s
        for k, ((n, _, _), c) in enumerate(zip(hops, doing)):
            after = hops[(k + 1) % len(hops)][0]
            t += self.cfg.message_s + c + (self._link_rtt(n.endpoint, after.endpoint) / 2 if after is not n else 0.0)
        return t

    def _cpu_per_token(self, s: Session) -> float:
        """CPU seconds one decoded token costs the host when every process shares it (a lab)."""
        msgs = len(s.hops) + 1 if self.cfg.push and len(s.hops) > 1 else 2 * len(s.hops)
        return self.cfg.client_s + msgs * self.cfg.message_cpu_s + sum(
            (b - a) / (n.end - n.start) * n.iteration.step / n.iteration.batch for n, a, b, _ in s.hops)

    def _uncovered(self, serves: Callable[[SimNode], bool] = lambda n: n.state in ("online", "draining")
                   ) -> list[bool]:
        """Per block: whether no node (that `serves`) holds it."""
        return [c == 0 for c in self._servers(serves)]

    def _servers(self, serves: Callable[[SimNode], bool] = lambda n: n.state in ("online", "draining")) -> list[int]:
        """Per block: how many nodes (that `serve`) hold it."""
        diff = [0] * (self.model.num_blocks + 1)
        for n in self.nodes.values():
            if serves(n):
                diff[n.start] += 1
                diff[n.end] -= 1
        return list(itertools.accumulate(diff[:-1]))

    def _tick(self, t: float, dt: float) -> None:
        cfg, m = self.cfg, self.metrics
        for node in list(self.nodes.values()):
            if node.state == "draining" and (t >= node.drain_until or not node.sessions):
                self._drained(node)
            if node.state == "online" and t >= node.next_announce:
                self._measure(node)
                self._announce(node)
            elif node.state == "online" and cfg.eager_announce and load_moved(node.shown_sessions, len(node.sessions)):
                self._announce(node)  # checked each tick, as each 2 s
            if node.state == "gone" and t - self.announced_at.get(node.peer_id, t) > 3 * cfg.announce_period:
                self._store(node.peer_id, None)  # a crashed node's record expires
            if node.state == "gone" and not node.sessions and node.peer_id not in self.records:
                del self.nodes[node.peer_id]
        for s in list(self.sessions):
            if not s.waiting and any(n.epoch != e for n, _, _, e in s.hops):
                self._repair(s)
        decoding = [s for s in self.sessions if not s.waiting and s.ready_at < t + dt]
        tpts = self._decode_rates(decoding, t + dt)
        busy: dict[str, float] = {}
        made = 0.0
        for s in decoding:
            tpt = tpts[s]
            began = max(t, s.ready_at)
            if s.decode_started is None:
                s.decode_started = began
                m.first_token.append(s.ready_at - s.arrived)  # the prefill's last row gave the first token
            tokens = min(s.answer - s.tokens, (t + dt - began) / tpt)
            s.tokens += tokens
            made += tokens
            for n, a, b, _ in s.hops:
                share = (b - a) / (n.end - n.start) * n.iteration.step / n.iteration.batch
                busy[n.peer_id] = busy.get(n.peer_id, 0.0) + tokens * share
            if s.tokens >= s.answer - 1e-9:
                self.now = began + (s.answer - (s.tokens - tokens)) * tpt
                self._finish(s)
                self.now = t
        m.tokens += made
        for node in self.nodes.values():
            if node.state != "gone":
                use = min(1.0, busy.get(node.peer_id, 0.0) / dt)
                m.energy_j += (node.hw.idle_w + (node.hw.power_w - node.hw.idle_w) * use) * dt
        servers = self._servers()
        uncovered = servers.count(0)
        m.uncovered_block_s += uncovered * dt
        sample = not m.series or t - m.series[-1][0] >= cfg.bound_every_s - 1e-9
        if sample:
            self._bound = self.yardstick.bounds([n for n in self.nodes.values() if n.state in ("online", "draining")])
        m.bound_token_s += self._bound[0] * dt
        m.best_token_s += self._bound[1] * dt
        m.batched_token_s += self._bound[2] * dt
        if sample:
            since, tokens = self._sampled
            m.series.append((t, (m.tokens - tokens) / (t + dt - since), self._bound[0], uncovered))
            m.servers.append(servers)
            self._sampled = (t + dt, m.tokens)
