"""Endpoints the gateway lacks answer a JSON 404 in OpenAI's shape that lists the ones it has."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import API_KEY

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.mark.parametrize("method, path", [("POST", "/v1/embeddings"), ("GET", "/v1/embeddings"),
                                          ("POST", "/v1/audio/speech"), ("DELETE", "/v1/files/x"),
                                          ("POST", "/anything")])
def test_an_unknown_endpoint_is_a_404_naming_the_supported_ones(gateway, method, path):
    reply = httpx.request(method, gateway.url + path, json={"model": "x", "input": "hi"}, headers=HEADERS, timeout=60)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "not_found" and error["type"] == "invalid_request_error"
    assert f"{method} {path}" in error["message"]
    for supported in ("POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models", "GET /health"):
        assert supported in error["message"]


def test_a_get_of_a_post_endpoint_says_to_post(gateway):
    reply = httpx.get(gateway.base_url + "/chat/completions", headers=HEADERS, timeout=60)
    assert reply.status_code == 404
    assert reply.json()["error"]["message"].startswith("GET /v1/chat/completions is not an endpoint")
    assert "POST /v1/chat/completions" in reply.json()["error"]["message"]


def test_the_dashboard_page_is_still_served(gateway):
    reply = httpx.get(gateway.url + "/", timeout=60)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
