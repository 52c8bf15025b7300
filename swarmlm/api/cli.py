"""`swarmlm api`: serve a swarm's models over OpenAI's HTTP API, with a dashboard at /.

The web stack is imported inside the handler, so `swarmlm --help` stays fast and a node that
never runs the gateway needs no web packages (`pip install 'swarmlm[api]'` brings them).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import signal
import socket
from typing import Any

from node.errors import ConfigError

from .settings import ApiSettings, add_arguments, resolve

GRACEFUL_SHUTDOWN_S = 10.0  # open streams get this long on Ctrl-C / SIGTERM, then their sessions close


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "api", help="OpenAI-compatible HTTP gateway to a swarm, with a dashboard",
        description="Serve /v1/models, /v1/chat/completions and /v1/completions (streaming too) through the "
                    "swarm, naming in every answer the model root, the chain of nodes and the session id "
                    "(the `swarmlm` field and X-SwarmLM-* headers); the dashboard is at /. Precedence: "
                    "flag > SWARMLM_API_* environment > default.")
    add_arguments(p)
    p.set_defaults(func=_serve)


def _listen(settings: ApiSettings) -> socket.socket:
    """Bind before joining the swarm, so a taken port fails at once; connections queue until serving."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        return socket.create_server((settings.host, settings.port), family=family)
    except OSError as e:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}") from None


def _run_on(loop: asyncio.AbstractEventLoop, server: Any, sock: socket.socket, gateway: Any) -> None:
    """Serve on the swarm client's loop (requests then await the swarm with no thread hop), until
    SIGINT/SIGTERM, and close the sessions still open (with receipts) before returning.

    The loop runs on its own thread, where uvicorn cannot take signals, so this (main) thread takes them."""
    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await gateway.drain()

    def stop(signum: int, frame: Any) -> None:
        server.handle_exit(signum, frame)  # the first asks for a graceful shutdown, a second forces it

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        done = asyncio.run_coroutine_threadsafe(serve(), loop)
        while True:
            try:
                return done.result(timeout=0.5)  # a timeout lets signal handlers run here
            except concurrent.futures.TimeoutError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(args: argparse.Namespace) -> int:
    settings = resolve(args)
    try:
        import uvicorn

        from .app import create_app
        from .connections import Limits
        from .gateway import Gateway
    except ImportError as e:
        raise ConfigError(f"the gateway needs its web stack ({e.name} is missing): "
                          "pip install 'swarmlm[api]'") from None
    sock = _listen(settings)
    try:
        gateway = Gateway.connect(settings)
        try:
            limits = Limits(settings.max_connections, settings.head_timeout, settings.body_timeout,
                            settings.send_timeout, settings.max_client_connections, frozenset(settings.trusted_proxy))
            config = uvicorn.Config(limits.middleware(create_app(gateway)), log_config=None,
                                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, http=limits.protocol, ws="none",
                                    proxy_headers=bool(settings.trusted_proxy),
                                    forwarded_allow_ips=settings.trusted_proxy or None)
            host, port = sock.getsockname()[:2]
            url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            for m in gateway.models.values():
                print(f"model {m.id} root {m.root}", flush=True)
            print(f"OpenAI base URL: {url}/v1   dashboard: {url}/", flush=True)
            print(f"ready {url}", flush=True)
            _run_on(gateway.loop, uvicorn.Server(config), sock, gateway)
        finally:
            gateway.close()
    finally:
        sock.close()
    return 0
