"""The dashboard's JSON: swarm coverage, nodes' checkpoints and cosignatures, and a ledger explorer.

Everything is read live from the swarm through the gateway's own client (signed DHT records and
the `swarmlm.ledger` RPC) and checked here; the page only draws it. With an API key set, these
endpoints want it too (they make the gateway query the swarm); `/swarm/info` says so, unauthenticated.
"""

from __future__ import annotations

from typing import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ledger.errors import LedgerError
from routing.errors import RoutingError
from swarmlm import __version__
from swarmlm.swarm_status import swarm_report

from .errors import APIError, bad_request
from .gateway import Gateway, ServedModel
from .ledger_explorer import LedgerExplorer

MAX_SERVES = 100


class Dashboard:
    def __init__(self, gateway: Gateway, authorize: Callable[[Request], None]) -> None:
        self.gateway, self.authorize = gateway, authorize
        self.explorers = {name: LedgerExplorer(m.remote.client) for name, m in gateway.models.items()}

    def _model(self, request: Request) -> ServedModel:
        self.authorize(request)
        return self.gateway.model(request.query_params.get("model") or next(iter(self.gateway.models)))

    async def info(self, request: Request) -> Response:
        return JSONResponse({"version": __version__, "auth_required": self.gateway.settings.api_key is not None,
                             "models": list(self.gateway.models)})

    async def status(self, request: Request) -> Response:
        """Per model: `swarm status --json`'s report (coverage, nodes, unserved blocks)."""
        self.authorize(request)
        reports = []
        for served in self.gateway.models.values():
            reached = set(served.remote.view.rtt)  # the nodes the gateway's client measured itself
            reports.append({"id": served.id, **swarm_report(await served.records(), served.remote.store.manifest,
                                                             reached)})
        return JSONResponse({"models": reports})

    async def checkpoints(self, request: Request) -> Response:
        served = self._model(request)
        peers = sorted(p for p, r in (await served.records()).items() if r.state != "offline")
        return JSONResponse({"model": served.id, "nodes": await self._explore(
            served, self.explorers[served.id].checkpoints(peers))})

    async def ledger(self, request: Request) -> Response:
        served = self._model(request)
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            raise bad_request("limit must be an integer", param="limit") from None
        if not 1 <= limit <= MAX_SERVES:
            raise bad_request(f"limit must be in 1..{MAX_SERVES}", param="limit")
        peer = request.path_params["peer"]
        if peer not in await served.records():  # only nodes of this model: no dialling whatever a client names
            raise APIError(404, f"no node {peer[:60]!r} serves {served.id}", type="not_found_error",
                           code="unknown_node")
        explorer = self.explorers[served.id]
        return JSONResponse(await self._explore(served, explorer.serves(
            peer, limit, request.query_params.get("session") or None)))

    @staticmethod
    async def _explore(served: ServedModel, coro: object) -> object:
        try:
            return await served.on_client(coro)  # type: ignore[arg-type]
        except (RoutingError, LedgerError) as e:
            raise APIError(502, f"could not read that ledger: {e}", type="swarm_error", code="ledger_unavailable")
