"""The dashboard's JSON: swarm coverage, nodes' checkpoints and cosignatures, and a ledger explorer.

Everything is read live from the swarm through the gateway's own client (signed DHT records and
the `swarmlm.ledger` RPC) and checked here; the page only draws it. With an API key set, these
endpoints want it too (they make the gateway query the swarm); `/swarm/info` says so, unauthenticated.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ledger.errors import LedgerError
from routing.errors import RoutingError
from swarmlm import __version__
from swarmlm.swarm_status import answering, swarm_report

from .errors import APIError, bad_request
from .gateway import Gateway, ServedModel
from .ledger_explorer import LedgerExplorer, unreadable

log = logging.getLogger(__name__)

MAX_SERVES = 100
PING_EVERY_S = 5.0  # status re-pings the nodes at most this often, however many tabs refresh every 2 s
PING_S = 10.0  # a node silent this long does not count as online (as in `swarm status`)
GONE_KEPT = 64  # gone nodes remembered per model: records are anyone's to publish, so the memory is bounded


class _Watch:
    """One model's nodes across status refreshes, kept by the gateway so that every tab sees the same:
    who answered the latest ping round (a killed node's signed record outlives it by up to three
    announce periods, and the client's round-trip table keeps it for good) and who has gone (its
    record expired)."""

    def __init__(self) -> None:
        self.reached: set[str] = set()
        self.asked: set[str] = set()  # the peers the latest round pinged
        self.pinged = -math.inf  # when the latest round ended
        self.round: asyncio.Future[None] | None = None  # referenced here; _ping collects its own errors
        self.last: dict[str, dict[str, Any]] = {}  # peer -> its node in the last report
        self.gone: dict[str, dict[str, Any]] = {}  # peer -> its last node, with gone_at; oldest first

    async def answering(self, served: ServedModel, records: dict[str, Any]) -> set[str]:
        """The peers among `records` that answered the latest round. A round starts when the last is
        PING_EVERY_S old; a status waits for it only when there are peers never asked (at start, a new
        node), so a node that hangs rather than refuses never holds the page up."""
        new = set(records) - self.asked
        if self.round is None or self.round.done() and (new or time.monotonic() - self.pinged >= PING_EVERY_S):
            self.asked = set(records)
            self.round = asyncio.ensure_future(self._ping(served, records))
        if new:
            await asyncio.shield(self.round)
        return self.reached & set(records)

    async def _ping(self, served: ServedModel, records: dict[str, Any]) -> None:
        try:
            self.reached = await served.on_client(answering(served.remote.client, records, PING_S))
        except Exception as e:  # the client is closing: the next round tries again
            log.warning("pinging the nodes failed: %s", e)
        finally:
            self.pinged = time.monotonic()

    def note(self, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record who left since the last report; the gone nodes, the latest first."""
        live = {n["peer_id"] for n in nodes}
        for peer in self.last.keys() - live:
            self.gone[peer] = {**self.last[peer], "gone_at": time.time()}
        for peer in live & self.gone.keys():
            del self.gone[peer]
        while len(self.gone) > GONE_KEPT:
            del self.gone[next(iter(self.gone))]
        self.last = {n["peer_id"]: n for n in nodes}
        return sorted(self.gone.values(), key=lambda n: -n["gone_at"])


class Dashboard:
    def __init__(self, gateway: Gateway, authorize: Callable[[Request], None]) -> None:
        self.gateway, self.authorize = gateway, authorize
        self.explorers = {name: LedgerExplorer(m.remote.client) for name, m in gateway.models.items()}
        self.watches = {name: _Watch() for name in gateway.models}

    def _model(self, request: Request) -> ServedModel:
        self.authorize(request)
        return self.gateway.model(request.query_params.get("model") or next(iter(self.gateway.models)))

    async def info(self, request: Request) -> Response:
        return JSONResponse({"version": __version__, "auth_required": self.gateway.settings.api_key is not None,
                             "models": list(self.gateway.models)})

    async def status(self, request: Request) -> Response:
        """Per model: `swarm status --json`'s report (coverage, nodes, unserved blocks) counting only the
        nodes that answer a ping, and the nodes gone since this gateway first saw them."""
        self.authorize(request)
        reports = []
        for served in self.gateway.models.values():
            watch, records = self.watches[served.id], await served.records()
            report = swarm_report(records, served.remote.store.manifest, await watch.answering(served, records))
            report["gone"] = watch.note(report["nodes"])
            report["totals"]["gone"] = len(report["gone"])
            reports.append({"id": served.id, **report})
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
            log.info("a ledger read failed: %s", e)  # the raw error, for whoever debugs the node
            raise APIError(502, f"could not read its ledger: {unreadable(e)}", type="swarm_error",
                           code="ledger_unavailable")
