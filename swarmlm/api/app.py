"""The gateway's ASGI application: OpenAI endpoints under /v1, dashboard data under /swarm, the page at /.

Starlette on uvicorn: a small, well-kept ASGI toolkit whose streaming responses notice a client
that disconnects, served on the uvloop this project already runs. Every error leaves in OpenAI's
JSON shape, so clients raise their usual exception types.
"""

from __future__ import annotations

from typing import Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .completions import Completions
from .dashboard import Dashboard
from .errors import APIError
from .gateway import Gateway
from .guard import RequestGuard
from .health import Health
from .metrics import Metrics, MetricsMiddleware
from .responses_api import Responses
from .unknown import catch_all, supported, unknown_endpoint


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug, not the user's doing: the server logs the traceback; the client gets the JSON shape."""
    return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}", type="server_error").body(),
                        status_code=500)


def create_app(gateway: Gateway) -> Starlette:
    metrics = Metrics()
    completions = Completions(gateway, metrics)
    dashboard = Dashboard(gateway, completions.authorize)
    routes = [
        Route("/health", Health(gateway).health),
        Route("/metrics", metrics.page),
        Route("/v1/models", completions.list_models),
        Route("/v1/models/{model:path}", completions.get_model),
        Route("/v1/chat/completions", completions.chat, methods=["POST"]),
        Route("/v1/completions", completions.completions, methods=["POST"]),
        Route("/v1/responses", Responses(completions).create, methods=["POST"]),
        Route("/swarm/info", dashboard.info),
        Route("/swarm/status", dashboard.status),
        Route("/swarm/checkpoints", dashboard.checkpoints),
        Route("/swarm/ledger/{peer}", dashboard.ledger),
    ]
    endpoints = supported(routes)
    routes += [catch_all(endpoints), Mount("/", StaticFiles(packages=[("swarmlm.api", "static")], html=True))]

    def answer(error: APIError, headers: Mapping[str, str] | None = None) -> Response:
        metrics.error(error)
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return answer(exc, exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Unknown paths and methods, in the same shape as every other error."""
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return answer(unknown_endpoint(request.method, request.url.path, endpoints))
        return answer(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}"), exc.headers)

    settings = gateway.settings
    guard = Middleware(RequestGuard, allowed_hosts=[*settings.allowed_host, settings.host],
                       cors_origins=settings.cors_origin)
    return Starlette(routes=routes, middleware=[Middleware(MetricsMiddleware, metrics=metrics), guard],
                     exception_handlers={APIError: api_error, HTTPException: http_error, Exception: _internal_error})
