"""What every request must pass before it reaches an endpoint, and what every response carries.

A keyless gateway on 127.0.0.1 is reachable from any web page the user opens: a page can POST
`text/plain` JSON without a CORS preflight, and a DNS-rebinding page can read answers through a
name that resolves to 127.0.0.1. So: the `Host` must be one this gateway answers to (localhost
names and `--allowed-host`), a browser's `Origin` must be the gateway's own or one allowed with
`--cors-origin`, a request body must be JSON (415 otherwise), and every response forbids framing,
MIME sniffing and foreign scripts.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Iterable

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _hostname(host: str) -> str:
    """`host[:port]` → host, lower-cased; IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    """ASGI middleware: Host allow-list, Origin check (with CORS for allowed origins), JSON bodies only,
    security headers on every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.hosts = LOCAL_HOSTS | {_hostname(h) for h in allowed_hosts}
        self.any_host = "*" in self.hosts
        self.origins = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host, origin = headers.get("host", ""), headers.get("origin")
        if not self.any_host and _hostname(host) not in self.hosts:
            await _refuse(send, 421, f"this gateway does not answer to host {host[:100]!r}; an operator allows "
                                     "more names with --allowed-host", "host_not_allowed")
            return
        allowed_origin = origin is not None and origin.rstrip("/").lower() in self.origins
        if origin is not None and not allowed_origin and not _same_origin(origin, host, scope):
            await _refuse(send, 403, f"cross-origin requests from {origin[:100]!r} are refused; an operator "
                                     "allows an origin with --cors-origin", "origin_not_allowed")
            return
        if scope["method"] == "OPTIONS" and allowed_origin:
            await _preflight(send, origin)
            return
        if scope["method"] in BODY_METHODS and not _is_json(headers.get("content-type", "")):
            await _refuse(send, 415, "request bodies must be JSON (Content-Type: application/json)",
                          "unsupported_media_type")
            return
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")] \
            if allowed_origin else []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS, *cors]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _same_origin(origin: str, host: str, scope: Scope) -> bool:
    scheme = "https" if scope.get("scheme") == "https" else "http"
    return origin.rstrip("/").lower() == f"{scheme}://{host.strip().lower()}"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _refuse(send: Callable[[Message], Awaitable[None]], status: int, message: str, code: str) -> None:
    """An OpenAI-shaped error, sent before the request reaches the app."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


async def _preflight(send: Callable[[Message], Awaitable[None]], origin: str) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": [
        (b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", b"Authorization, Content-Type"),
        (b"access-control-max-age", b"600"), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": b""})
