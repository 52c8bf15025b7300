"""A node's /metrics after a generation: the counters moved by exactly what it served."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from swarmlm.sdk import RemoteModel


def _scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {s.name + str(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_move_by_exactly_the_tokens_served(swarm3, default_store):
    node = next(n for n in swarm3.nodes if n.blocks[0] == 0)  # the only node of the first span
    url = re.search(r"^metrics (\S+)$", Path(node.log).read_text(), re.M).group(1)
    before = _scrape(url)
    with RemoteModel.connect(swarm3.initial_peers, default_store.path) as model:
        with model.inference_session(max_length=64) as s:
            g = s.generate("What is the capital of France?", 12)
            span = s.runner.spans[0]
            sent_tokens, steps = span.tokens, span.steps
    after = _scrape(url)
    assert g.text == "The capital of France is Paris." and span.peer == node.peer_id
    assert after["swarmlm_tokens_served_total[]"] - before["swarmlm_tokens_served_total[]"] == sent_tokens
    assert after["swarmlm_steps_served_total[]"] - before["swarmlm_steps_served_total[]"] == steps
    assert after["swarmlm_sessions_opened_total[]"] - before["swarmlm_sessions_opened_total[]"] == 1
    assert after["swarmlm_rpc_duration_seconds_count[('handler', 'inference')]"] >= steps
    assert after["swarmlm_span_blocks[]"] == node.blocks[1] - node.blocks[0]
