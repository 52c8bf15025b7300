"""The gateway's request guard: Host allow-list, Origin check, JSON bodies only, security headers.

In process against a tiny app (no model), then once against the real gateway process."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from swarmlm.api.guard import RequestGuard


async def _echo(request):  # noqa: ANN001, ANN202
    return JSONResponse({"ok": True})


@pytest.fixture
def app() -> TestClient:
    app = Starlette(routes=[Route("/v1/x", _echo, methods=["GET", "POST"])],
                    middleware=[Middleware(RequestGuard, allowed_hosts=["gw.example"],
                                           cors_origins=["https://app.example"])])
    return TestClient(app, base_url="http://127.0.0.1:8000")


def test_local_and_allowed_hosts_pass_and_every_answer_has_security_headers(app) -> None:
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000", "gw.example:443"):
        r = app.get("/v1/x", headers={"host": host})
        assert r.status_code == 200, host
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


def test_a_rebinding_host_is_refused(app) -> None:
    r = app.get("/v1/x", headers={"host": "attacker.example:8000"})
    assert r.status_code == 421 and r.json()["error"]["code"] == "host_not_allowed"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_cross_site_posts_are_refused_unless_the_origin_is_allowed(app) -> None:
    evil = app.post("/v1/x", content=b'{"a": 1}', headers={"origin": "https://evil.example",
                                                           "content-type": "application/json"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "origin_not_allowed"
    same = app.post("/v1/x", json={"a": 1}, headers={"origin": "http://127.0.0.1:8000"})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers
    allowed = app.post("/v1/x", json={"a": 1}, headers={"origin": "https://app.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    preflight = app.options("/v1/x", headers={"origin": "https://app.example",
                                              "access-control-request-method": "POST"})
    assert preflight.status_code == 204 and "POST" in preflight.headers["access-control-allow-methods"]


def test_a_body_that_is_not_json_gets_415(app) -> None:
    """A page's form or fetch may send text/plain without a preflight: it never reaches an endpoint."""
    for ctype in ("text/plain", "application/x-www-form-urlencoded", ""):
        r = app.post("/v1/x", content=b'{"a": 1}', headers={"content-type": ctype})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", ctype
    assert app.post("/v1/x", content=b"{}", headers={"content-type": "application/json; charset=utf-8"}).is_success


def test_the_real_gateway_refuses_a_cross_site_text_plain_post(gateway) -> None:
    body = b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}'
    plain = httpx.post(gateway.url + "/v1/chat/completions", content=body, timeout=60,
                       headers={"content-type": "text/plain", "origin": "http://127.0.0.1:1"})
    assert plain.status_code == 403
    rebound = httpx.get(gateway.url + "/swarm/info", headers={"host": "rebind.example"}, timeout=60)
    assert rebound.status_code == 421
    page = httpx.get(gateway.url + "/", timeout=60)
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
