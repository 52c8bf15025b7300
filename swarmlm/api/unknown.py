"""Requests for endpoints this gateway lacks: a JSON 404 in OpenAI's shape naming the ones it has.

Without this, a POST to an OpenAI path the gateway does not serve (`/v1/embeddings`) fell through
to the page's static files and came back a bare 405, which clients report as a server fault
rather than as "not supported here".
"""

from __future__ import annotations

from typing import Iterable, NoReturn

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from .errors import APIError

CATCH_ALL = "/{path:path}"
NOT_GET = ["POST", "PUT", "PATCH", "DELETE"]  # GETs of other paths are the page's files (or its 404)


def supported(routes: Iterable[BaseRoute]) -> list[str]:
    """`METHOD /path` for every API route, as a 404 lists them."""
    return [f"{'/'.join(sorted((r.methods or set()) - {'HEAD'}))} {r.path_format}" for r in routes
            if isinstance(r, Route) and r.path != CATCH_ALL]


def unknown_endpoint(method: str, path: str, endpoints: list[str]) -> APIError:
    return APIError(404, f"{method} {path[:200]} is not an endpoint of this gateway; it serves "
                         f"{', '.join(endpoints)}", type="invalid_request_error", code="not_found")


def catch_all(endpoints: list[str]) -> Route:
    """A route for every non-GET request no other route takes; register it last but before the files."""
    async def refuse(request: Request) -> NoReturn:
        raise unknown_endpoint(request.method, request.url.path, endpoints)

    return Route(CATCH_ALL, refuse, methods=NOT_GET)
