"""A node's /metrics: counters move by exactly what was served, gauges read the state at scrape time."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.errors import NodeError
from node.metrics import NodeMetrics, NodeState
from routing.relay_stats import RelayStats, parse

REPO = Path(__file__).resolve().parents[2]
STATE: NodeState = {"active_sessions": 2, "cache_tokens_used": 300, "cache_tokens_free": 7892, "dht_peers": 4,
                    "blocks_served": (10, 20), "root": "ab" * 32, "dtype": "float32", "ledger_entries": 17,
                    "ledger_checkpoint_size": 16, "ledger_ok": 1, "ledger_pending": 0, "ledger_commit_failures": 0,
                    "ledger_unwritten": 0, "reachability": "direct", "relays": (),
                    "relayed": RelayStats(bytes=5 << 20, circuits_opened=3, circuits_closed=1, reservations_opened=2)}


@pytest.fixture
def metrics():
    m = NodeMetrics()
    yield m
    m.stop_http()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a real HTTP scrape, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_move_by_exactly_what_was_recorded(metrics):
    port = metrics.start_http("127.0.0.1", 0)
    before = scrape(port)
    metrics.tokens(7)
    metrics.tokens(1)
    for _ in range(3):
        metrics.step()
    metrics.forward()
    metrics.session_opened()
    metrics.error("bad_frame")
    metrics.rpc("inference", 0.02)
    metrics.rpc("inference", 3.0)
    after = scrape(port)
    assert before[("swarmlm_tokens_served_total", ())] == 0
    assert after[("swarmlm_tokens_served_total", ())] == 8
    assert after[("swarmlm_steps_served_total", ())] == 3
    assert after[("swarmlm_forwards_total", ())] == 1
    assert after[("swarmlm_sessions_opened_total", ())] == 1
    assert after[("swarmlm_errors_total", (("code", "bad_frame"),))] == 1
    assert after[("swarmlm_errors_total", (("code", "internal"),))] == 0  # every code exists before it happens
    assert after[("swarmlm_rpc_duration_seconds_count", (("handler", "inference"),))] == 2
    assert after[("swarmlm_rpc_duration_seconds_sum", (("handler", "inference"),))] == pytest.approx(3.02)
    assert after[("swarmlm_rpc_duration_seconds_bucket", (("handler", "inference"), ("le", "0.025")))] == 1


def test_gauges_are_read_from_the_state_callback_at_each_scrape(metrics):
    state = dict(STATE)
    metrics.set_state_source(lambda: state)
    port = metrics.start_http("127.0.0.1", 0)
    first = scrape(port)
    assert first[("swarmlm_active_sessions", ())] == 2
    assert first[("swarmlm_cache_tokens_free", ())] == 7892
    assert first[("swarmlm_span_blocks", ())] == 10
    info_labels = (("dtype", "float32"), ("end", "20"), ("root", "ab" * 32), ("start", "10"))
    assert first[("swarmlm_span_info", info_labels)] == 1
    assert first[("swarmlm_ledger_checkpoint_size", ())] == 16
    assert first[("swarmlm_relayed_bytes_total", ())] == 5 << 20
    assert first[("swarmlm_relay_circuits_total", (("event", "opened"),))] == 3
    assert first[("swarmlm_relay_reservations_total", ())] == 2
    assert first[("process_resident_memory_bytes", ())] > 0
    state["active_sessions"] = 0
    assert scrape(port)[("swarmlm_active_sessions", ())] == 0


def test_a_failing_or_partial_state_callback_leaves_the_endpoint_serving(metrics):
    metrics.set_state_source(lambda: 1 / 0)
    port = metrics.start_http("127.0.0.1", 0)
    metrics.tokens(2)
    samples = scrape(port)
    assert samples[("swarmlm_tokens_served_total", ())] == 2
    assert ("swarmlm_active_sessions", ()) not in samples
    metrics.set_state_source(lambda: {"dht_peers": 3})
    samples = scrape(port)
    assert samples[("swarmlm_dht_peers", ())] == 3 and ("swarmlm_span_blocks", ()) not in samples


def test_each_node_has_its_own_registry():
    a, b = NodeMetrics(), NodeMetrics()
    a.tokens(5)
    assert a.registry.get_sample_value("swarmlm_tokens_served_total") == 5
    assert b.registry.get_sample_value("swarmlm_tokens_served_total") == 0


def test_a_taken_port_is_a_node_error_naming_the_flag(metrics):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(NodeError, match="--metrics-port"):
            metrics.start_http("127.0.0.1", taken.getsockname()[1])


def exported_names(metrics: NodeMetrics) -> set[str]:
    """Every sample name a node with full state and one of each labelled event exports."""
    metrics.set_state_source(lambda: STATE)
    metrics.rpc("info", 0.001)
    return {s.name for family in metrics.registry.collect() for s in family.samples
            if not s.name.endswith("_created")}  # the time a counter started: nothing to chart


def _base(name: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", name)


def test_the_grafana_dashboard_charts_every_metric_and_only_those(metrics):
    dashboard = json.loads((REPO / "systemd" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    referenced = {name for expr in exprs for name in re.findall(r"\b(?:swarmlm|process)_[a-z_]+", expr)}
    exported = exported_names(metrics)
    assert referenced - exported == set()
    assert {_base(n) for n in exported if n.startswith("swarmlm_")} - {_base(n) for n in referenced} == set()
    assert {json.dumps(panel["datasource"]) for panel in dashboard["panels"]} == {
        json.dumps({"type": "prometheus", "uid": "${DS_PROMETHEUS}"})}


P2PD_METRICS = """# TYPE libp2p_relaysvc_data_transferred_bytes_total counter
libp2p_relaysvc_data_transferred_bytes_total 123456
# TYPE libp2p_relaysvc_connections_total counter
libp2p_relaysvc_connections_total{type="opened"} 4
libp2p_relaysvc_connections_total{type="closed"} 3
# TYPE libp2p_relaysvc_reservations_total counter
libp2p_relaysvc_reservations_total{type="opened"} 2
libp2p_relaysvc_reservations_total{type="renewed"} 7
# TYPE libp2p_relaysvc_status gauge
libp2p_relaysvc_status 1
# TYPE go_goroutines gauge
go_goroutines 80
"""


def test_relayed_bytes_are_p2pds_relay_counters():
    assert parse(P2PD_METRICS) == RelayStats(bytes=123456, circuits_opened=4, circuits_closed=3,
                                             reservations_opened=2)
    assert parse("libp2p_relaysvc_status 0\n") == RelayStats()  # nothing relayed yet: p2pd has no series
