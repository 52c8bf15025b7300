"""The node's Prometheus metrics: what it served, how fast, and its state at scrape time.

Events (tokens, steps, RPC latencies, errors) are counted as they happen; levels (sessions,
cache, DHT peers, span, ledger) are read from one callback when Prometheus scrapes, so the
serving code never has to remember to update a gauge. The metrics live in their own registry:
two nodes in one process (tests) never share counters, and nothing else's metrics leak in.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterator, TypedDict
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from routing import untrusted
from routing.relay_stats import RelayStats
from routing.errors import ErrorCode

from .errors import NodeError

log = logging.getLogger(__name__)

# From a cached step on a small span (ms) to a long prefill or a stalled peer (tens of seconds).
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class NodeState(TypedDict, total=False):
    """What the state callback returns; a key left out (not known yet) exports no series."""

    active_sessions: int
    cache_tokens_used: int
    cache_tokens_free: int
    dht_peers: int
    blocks_served: tuple[int, int]  # the span [start, end)
    root: str  # manifest root, a label of swarmlm_span_info
    dtype: str  # compute dtype, a label of swarmlm_span_info
    ledger_entries: int
    ledger_checkpoint_size: int  # tree size of the last signed checkpoint
    ledger_ok: int  # ledger.store.Health: 1 while it commits, 0 while appends wait for the disk
    ledger_pending: int
    ledger_commit_failures: int
    ledger_unwritten: int
    reachability: str  # routing.reachability.Reachability.kind: direct, relay, unreachable, unknown
    relays: tuple[str, ...]  # peer IDs of the relays holding our circuits
    relayed: RelayStats  # what our relay service carried for private nodes (p2pd's counters)


# (metric name, NodeState key, help) for the gauges that are one number each.
_LEVELS = (
    ("swarmlm_active_sessions", "active_sessions", "Inference sessions open on this node."),
    ("swarmlm_cache_tokens_used", "cache_tokens_used", "KV-cache pool tokens reserved by open sessions."),
    ("swarmlm_cache_tokens_free", "cache_tokens_free", "KV-cache pool tokens free for new sessions."),
    ("swarmlm_dht_peers", "dht_peers", "Peers in this node's DHT routing table."),
    ("swarmlm_ledger_entries", "ledger_entries", "Entries in this node's ledger."),
    ("swarmlm_ledger_checkpoint_size", "ledger_checkpoint_size",
     "Tree size (entries) of the ledger's last signed checkpoint."),
    ("swarmlm_ledger_ok", "ledger_ok", "1 while the ledger commits; 0 while appends wait for the disk "
     "(new sessions are refused)."),
    ("swarmlm_ledger_pending", "ledger_pending", "Ledger appends submitted and not yet committed."),
    ("swarmlm_ledger_commit_failures", "ledger_commit_failures", "Failed ledger commit attempts since start."),
    ("swarmlm_ledger_unwritten", "ledger_unwritten",
     "Ledger entries given up to the side file (or the log) since start: each one is an incident."),
)


class NodeMetrics:
    """The metrics one node exports; the serving code calls the event methods as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._rpc = Histogram("swarmlm_rpc_duration_seconds", "Time to serve one RPC request, by handler.",
                              ["handler"], buckets=RPC_BUCKETS, registry=r)
        self._tokens = Counter("swarmlm_tokens_served", "Tokens run through this node's blocks in sessions.",
                               registry=r)
        self._steps = Counter("swarmlm_steps_served", "Inference session steps served.", registry=r)
        self._forwards = Counter("swarmlm_forwards", "Stateless forward requests served.", registry=r)
        self._sessions = Counter("swarmlm_sessions_opened", "Inference sessions opened.", registry=r)
        self._empty = Counter("swarmlm_sessions_empty", "Sessions closed without computing a step: counted here, "
                              "not given a ledger entry each.", registry=r)
        self._errors = Counter("swarmlm_errors", "Requests refused or failed, by error code.", ["code"], registry=r)
        self._batch_requests = Histogram("swarmlm_batch_requests", "Requests (session steps, prefill chunks, "
                                         "forwards) computed together in one scheduler iteration.",
                                         buckets=BATCH_BUCKETS, registry=r)
        self._batch_tokens = Histogram("swarmlm_batch_tokens", "Tokens computed together in one scheduler iteration.",
                                       buckets=TOKEN_BUCKETS, registry=r)
        self._queue_wait = Histogram("swarmlm_queue_wait_seconds", "Time a request waited before its first chunk "
                                     "was computed.", buckets=RPC_BUCKETS, registry=r)
        for code in ErrorCode:  # every code exists at 0, so rate() and alerts work before the first error
            self._errors.labels(code.value)
        ProcessCollector(registry=r)  # resident memory, CPU, open files: what a months-long run must watch
        PlatformCollector(registry=r)
        self._state: Callable[[], NodeState] | None = None
        r.register(_StateCollector(self))
        r.register(_UntrustedCollector())
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ---- events -----------------------------------------------------------------------------------

    def rpc(self, handler: str, seconds: float) -> None:
        self._rpc.labels(handler).observe(seconds)

    def tokens(self, n: int) -> None:
        self._tokens.inc(n)

    def step(self) -> None:
        self._steps.inc()

    def forward(self) -> None:
        self._forwards.inc()

    def session_opened(self) -> None:
        self._sessions.inc()

    def session_empty(self) -> None:
        self._empty.inc()

    def error(self, code: ErrorCode | str) -> None:
        self._errors.labels(code.value if isinstance(code, ErrorCode) else code).inc()

    def batch(self, requests: int, tokens: int, waits: list[float]) -> None:
        """One scheduler iteration: how many requests and tokens shared the forward, and how long
        the requests it started had queued."""
        self._batch_requests.observe(requests)
        self._batch_tokens.observe(tokens)
        for wait in waits:
            self._queue_wait.observe(wait)

    # ---- levels and serving -------------------------------------------------------------------------

    def set_state_source(self, fn: Callable[[], NodeState]) -> None:
        """`fn` runs on the HTTP thread at each scrape: it must only read, and quickly."""
        self._state = fn

    def state(self) -> NodeState:
        """The callback's answer; a failing callback costs the gauges of one scrape, never the endpoint."""
        if self._state is None:
            return {}
        try:
            return self._state()
        except Exception:
            log.warning("metrics state callback failed; this scrape has no state gauges", exc_info=True)
            return {}

    def start_http(self, host: str, port: int) -> int:
        """Serve /metrics on a daemon thread; returns the bound port (useful with port 0)."""
        if self._server is not None:
            raise NodeError("the metrics endpoint is already running")
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as e:
            raise NodeError(f"cannot serve metrics on {host}:{port} ({e.strerror or e}); "
                            "choose another --metrics-port or --metrics-host") from None
        return int(self._server.server_port)

    def stop_http(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = self._thread = None


class _StateCollector(Collector):
    """Gauges computed from the state callback at each scrape."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # the series depend on the callback; describing none keeps registration from calling it

    def collect(self) -> Iterator[Metric]:
        state = self.metrics.state()
        for name, key, help_text in _LEVELS:
            if key in state:
                yield GaugeMetricFamily(name, help_text, value=state[key])
        if "blocks_served" in state:
            start, end = state["blocks_served"]
            yield GaugeMetricFamily("swarmlm_span_blocks", "Blocks this node serves.", value=end - start)
            info = GaugeMetricFamily("swarmlm_span_info", "The span this node serves (always 1).",
                                     labels=["start", "end", "root", "dtype"])
            info.add_metric([str(start), str(end), state.get("root", ""), state.get("dtype", "")], 1)
            yield info
        if "reachability" in state:
            reach = GaugeMetricFamily("swarmlm_reachability", "How peers reach this node (always 1): directly, "
                                      "through relays (their peer IDs), unreachable, or unknown.",
                                      labels=["how", "relays"])
            reach.add_metric([state["reachability"], ",".join(state.get("relays", ()))], 1)
            yield reach
        if "relayed" in state:
            relayed = state["relayed"]
            yield CounterMetricFamily("swarmlm_relayed_bytes", "Bytes this node's relay service forwarded for "
                                      "private nodes, both directions (p2pd's count).", value=relayed.bytes)
            circuits = CounterMetricFamily("swarmlm_relay_circuits", "Relayed connections through this node's "
                                           "relay service, by event.", labels=["event"])
            circuits.add_metric(["opened"], relayed.circuits_opened)
            circuits.add_metric(["closed"], relayed.circuits_closed)
            yield circuits
            yield CounterMetricFamily("swarmlm_relay_reservations", "Relay reservations this node granted "
                                      "to private nodes.", value=relayed.reservations_opened)


class _UntrustedCollector(Collector):
    """Untrusted items this process dropped, by kind (`routing.untrusted`), read at each scrape."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("swarmlm_untrusted_dropped", "Untrusted items (DHT records, evidence, "
                                     "receipts, checkpoints, frames) dropped as malformed, by kind.", labels=["kind"])
        for kind, count in untrusted.snapshot().items():
            family.add_metric([kind], count)
        yield family
