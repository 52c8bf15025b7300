"""POST /v1/responses: OpenAI's Responses API over the chat completion's generation, whole (not streamed yet).

A request becomes a chat completion's body, checked by the same rules: `instructions` a system
message, `input` (a string, or items: messages, `function_call`s and their
`function_call_output`s) the conversation, flat function `tools` and `tool_choice` as
shards.tool_calls takes them, `max_output_tokens` the budget, `text.format` the response_format.
`previous_response_id` continues a conversation this gateway answered, kept in memory for the last
MAX_KEPT responses (without its instructions, as OpenAI does). The answer's text and calls come back
as `message` and `function_call` output items; the id names the swarm session (`resp_<session>`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .completions import CLIENT_CLOSED, Completions, read_json
from .errors import bad_request, unsupported
from .jobs import Finished
from .responses import Answer
from .schemas import chat_request

MAX_KEPT = 1024  # conversations kept for previous_response_id
Message = dict[str, Any]


class Responses:
    def __init__(self, completions: Completions) -> None:
        self.completions = completions
        self._kept: OrderedDict[str, list[Message]] = OrderedDict()  # response id -> the chat, its answer included

    async def create(self, request: Request) -> Response:
        self.completions.authorize(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        if body.get("stream"):
            raise unsupported("stream", "Streaming /v1/responses")
        previous = body.get("previous_response_id")
        history = self._history(previous) if previous is not None else []
        messages = [*history, *input_messages(body.get("input"))]
        instructions = body.get("instructions")
        system = [{"role": "system", "content": instructions}] if instructions else []
        chat = {"model": body.get("model"), "messages": [*system, *messages], "max_tokens": body.get("max_output_tokens"),
                "temperature": body.get("temperature"), "top_p": body.get("top_p"), "tools": body.get("tools"),
                "tool_choice": body.get("tool_choice"), "parallel_tool_calls": body.get("parallel_tool_calls"),
                "response_format": text_format(body.get("text"))}
        req = await asyncio.get_running_loop().run_in_executor(None, chat_request, chat)
        result = await self.completions.whole(request, req)
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        [answer], finished = result
        rid = "resp_" + finished.provenance.session_id
        self._keep(rid, [*messages, answer_message(answer)])
        served = self.completions.gateway.model(req.model)
        return JSONResponse(response_json(rid, served.id, body, answer, finished),
                            headers=finished.provenance.headers())

    def _history(self, previous: Any) -> list[Message]:
        if not isinstance(previous, str) or previous not in self._kept:
            raise bad_request(f"Previous response with id {str(previous)[:80]!r} not found (this gateway keeps "
                              f"its last {MAX_KEPT} responses, in memory)", param="previous_response_id",
                              code="previous_response_not_found")
        self._kept.move_to_end(previous)
        return self._kept[previous]

    def _keep(self, rid: str, messages: list[Message]) -> None:
        self._kept[rid] = messages
        while len(self._kept) > MAX_KEPT:
            self._kept.popitem(last=False)


def input_messages(value: Any) -> list[Message]:
    """The Responses API's `input` as chat messages (function calls of a row join one assistant message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise bad_request("'input' must be a string or a non-empty array of items", param="input")
    out: list[Message] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad_request(f"input[{i}] must be an object", param=f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            out.append({"role": item.get("role"), "content": _text(item.get("content"), i)})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
        else:
            raise unsupported(f"input[{i}]", f"Input items of type {str(kind)[:40]!r}")
    return out


def _text(content: Any, i: int) -> Any:
    """A message's content parts as text (what is not a string or a list is left for the chat's checks)."""
    if not isinstance(content, list):
        return content
    if any(not isinstance(p, dict) or p.get("type") not in ("input_text", "output_text", "text") for p in content):
        raise unsupported(f"input[{i}].content", "Content other than text (images, audio, files)")
    return "\n".join(str(p.get("text", "")) for p in content)


def text_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as chat's `response_format`."""
    if text is None:
        return None
    form = text.get("format") if isinstance(text, dict) else None
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        return form
    return {"type": "json_schema", "json_schema": {k: form[k] for k in ("name", "schema", "strict") if k in form}}


def answer_message(answer: Answer) -> Message:
    if answer.tool_calls:
        return {"role": "assistant", "content": answer.text or None, "tool_calls": answer.tool_calls}
    return {"role": "assistant", "content": answer.text}


def response_json(rid: str, model: str, body: dict[str, Any], answer: Answer, finished: Finished) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if answer.text or not answer.tool_calls:
        output.append({"type": "message", "id": "msg_" + rid[5:], "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": answer.text, "annotations": []}]})
    for call in answer.tool_calls:
        output.append({"type": "function_call", "id": "fc_" + call["id"][5:], "call_id": call["id"],
                       "name": call["function"]["name"], "arguments": call["function"]["arguments"],
                       "status": "completed"})
    cut = answer.finish_reason == "length"
    return {"id": rid, "object": "response", "created_at": int(time.time()),
            "status": "incomplete" if cut else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None, "error": None,
            "model": model, "output": output, "instructions": body.get("instructions"),
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "previous_response_id": body.get("previous_response_id"), "text": body.get("text") or {"format": {"type": "text"}},
            "metadata": body.get("metadata") or {},
            "usage": {"input_tokens": finished.prompt_tokens, "output_tokens": finished.completion_tokens,
                      "total_tokens": finished.prompt_tokens + finished.completion_tokens,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
            "swarmlm": finished.provenance.to_json()}
