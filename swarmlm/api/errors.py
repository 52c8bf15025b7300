"""Errors in OpenAI's JSON shape, so existing clients raise their usual exception types.

`{"error": {"message", "type", "param", "code"}}` with the matching HTTP status: the official
`openai` package maps 400, 401, 404 and 5xx to BadRequestError, AuthenticationError,
NotFoundError and InternalServerError, and shows `message` to the developer.
"""

from __future__ import annotations

from typing import Any

from swarmlm.swarm_status import _ranges as block_ranges


class APIError(Exception):
    """A request the gateway answers with an error; `extra` adds fields (e.g. uncovered blocks)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers, self.extra = headers, extra

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code,
                          **self.extra}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported(param: str, what: str) -> APIError:
    return bad_request(f"{what} is not supported by this gateway", param=param, code="unsupported_parameter")


def model_not_found(model: str, known: list[str]) -> APIError:
    return APIError(404, f"The model '{model}' does not exist on this gateway; it serves {', '.join(known)}",
                    param="model", code="model_not_found")


def unauthorized(given: bool) -> APIError:
    why = "Incorrect API key provided" if given else "Missing API key: send 'Authorization: Bearer KEY'"
    return APIError(401, f"{why} (the gateway was started with --api-key / SWARMLM_API_KEY)",
                    type="authentication_error", code="invalid_api_key")


def no_route(model: str, uncovered: list[int], detail: str) -> APIError:
    """503: the swarm cannot serve this model now; names the blocks no usable node serves."""
    blocks = block_ranges(uncovered) if uncovered else "none (nodes refused or failed)"
    return APIError(503, f"No chain of nodes covers model '{model}': uncovered blocks {blocks}. {detail}",
                    type="service_unavailable", code="no_route", uncovered_blocks=uncovered)


def swarm_failure(detail: str) -> APIError:
    return APIError(502, f"The swarm failed to complete the request: {detail}", type="swarm_error",
                    code="swarm_failure")

