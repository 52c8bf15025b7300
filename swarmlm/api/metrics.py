"""The gateway's Prometheus metrics at /metrics: requests, tokens, latency and errors by code.

Each app has its own registry (not prometheus-client's process-wide one), so the figures are this
gateway's alone. Endpoints are labelled by their route template (`/v1/models/{model:path}`), never
by the raw path, so a client probing random URLs cannot grow the label set. Like vLLM's, the page
needs no API key: scrapers seldom send one, and it holds counts, not prompts.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from .errors import APIError
from .jobs import Finished

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)  # seconds: a long stream runs minutes


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("swarmlm_api_requests", "HTTP requests answered, by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("swarmlm_api_request_seconds", "from request to the response's last byte",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("swarmlm_api_time_to_first_token_seconds",
                                     "streamed requests: from the generation's start to its first token", ["model"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("swarmlm_api_tokens", "tokens of finished generations, by model and kind",
                              ["model", "kind"], registry=r)
        self.errors = Counter("swarmlm_api_errors", "errors answered in OpenAI's shape (mid-stream ones included), "
                              "by HTTP status and error code", ["status", "code"], registry=r)

    def error(self, error: APIError) -> None:
        self.errors.labels(str(error.status), error.code or error.type).inc()

    def finished(self, model: str, finished: Finished) -> None:
        self.tokens.labels(model, "prompt").inc(finished.prompt_tokens)
        self.tokens.labels(model, "completion").inc(finished.completion_tokens)

    async def page(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def endpoint_label(scope: Scope) -> str:
    """The matched route's template; 'static' for the page's files, 'unknown' for anything else."""
    route = scope.get("route")
    if isinstance(route, Route) and not route.path.startswith("/{"):
        return route.path
    return "static" if isinstance(route, Mount) else "unknown"


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request once its response ended (or broke off)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = time.perf_counter(), 500  # unless a response starts: an unhandled error

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            endpoint = endpoint_label(scope)
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - began)
