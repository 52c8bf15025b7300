"""A gateway's operators see it live: /health (liveness and coverage) and /metrics (Prometheus)."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import MODEL

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _samples(gateway) -> dict[tuple[str, frozenset], float]:
    reply = httpx.get(gateway.url + "/metrics", timeout=60)  # no key: scrapers seldom send one
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_health_answers_without_a_key_with_the_swarms_coverage(gateway):
    reply = httpx.get(gateway.url + "/health", timeout=60)
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ok"
    [model] = body["models"]
    assert model["id"] == MODEL and model["blocks_total"] == model["blocks_covered"] == 30
    assert model["uncovered_blocks"] == [] and model["nodes_known"] == model["nodes_reached"] == 3


def test_metrics_count_requests_tokens_latency_and_errors_by_code(gateway, client):
    before = _samples(gateway)
    completion = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    after = _samples(gateway)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    chat = {"endpoint": "/v1/chat/completions", "method": "POST"}
    assert grew("swarmlm_api_requests_total", **chat, status="200") == 1
    assert grew("swarmlm_api_requests_total", **chat, status="404") == 1
    assert grew("swarmlm_api_request_seconds_count", endpoint="/v1/chat/completions") == 2
    assert grew("swarmlm_api_tokens_total", model=MODEL, kind="completion") == completion.usage.completion_tokens
    assert grew("swarmlm_api_tokens_total", model=MODEL, kind="prompt") == completion.usage.prompt_tokens
    assert grew("swarmlm_api_errors_total", status="404", code="model_not_found") == 1


def test_a_stream_counts_its_first_token_and_its_tokens(gateway, client):
    before = _samples(gateway)
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24,
                                                 stream=True, stream_options={"include_usage": True}))
    after = _samples(gateway)
    first_tokens = ("swarmlm_api_time_to_first_token_seconds_count", frozenset({("model", MODEL)}))
    assert after[first_tokens] - before.get(first_tokens, 0.0) == 1
    completion = ("swarmlm_api_tokens_total", frozenset({("model", MODEL), ("kind", "completion")}))
    assert after[completion] - before.get(completion, 0.0) == chunks[-1].usage.completion_tokens
