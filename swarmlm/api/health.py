"""`GET /health`: the gateway is alive, and how much of each model the swarm covers as it sees it.

Always 200 while the process serves (a liveness probe must not restart a gateway because nodes
left); `status` is "ok" when every model is fully covered, else "degraded", so a readiness check
or a human reads it from the body. The figures come from the gateway's own view of the swarm
(records re-read in the background when stale, round trips it measured, its bans), so answering
costs no swarm query and the page needs no API key, like a load balancer's probe.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .gateway import Gateway, ServedModel


class Health:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def health(self, request: Request) -> Response:
        models = [await self._coverage(served) for served in self.gateway.models.values()]
        covered = all(m["blocks_covered"] == m["blocks_total"] for m in models)
        return JSONResponse({"status": "ok" if covered else "degraded", "models": models})

    @staticmethod
    async def _coverage(served: ServedModel) -> dict[str, Any]:
        c = await served.remote.coverage(refresh=True)
        return {"id": served.id, "model_root": served.root, "blocks_total": c.blocks_total,
                "blocks_covered": c.blocks_total - len(c.uncovered), "uncovered_blocks": list(c.uncovered),
                "nodes_known": c.nodes_known, "nodes_reached": c.nodes_reached}
