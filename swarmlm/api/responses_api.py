"""POST /v1/responses: OpenAI's Responses API over the chat completion's generation, whole or streamed.

A request becomes a chat completion's body, checked by the same rules: `instructions` a system
message, `input` (a string, or items: messages, `function_call`s and their
`function_call_output`s) the conversation, flat function `tools` and `tool_choice` as
shards.tool_calls takes them, `max_output_tokens` the budget, `text.format` the response_format.
`previous_response_id` continues a conversation this gateway answered, kept in memory for the last
MAX_KEPT responses (without its instructions, as OpenAI does). The answer's text and calls come back
as `message` and `function_call` output items; the id names the swarm session (`resp_<session>`).
Streamed (`stream: true`), they come as the Responses events, numbered: response.created and
.in_progress, then per item .output_item.added, its deltas (.output_text.delta under a
.content_part, or .function_call_arguments.delta), its .done events, and last response.completed
(or .incomplete when `max_output_tokens` cut it; an `error` event when the swarm failed).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shards.tool_calls import CallArguments, CallBegun, CallReader, Content, Delta

from .completions import CLIENT_CLOSED, Completions, read_json
from .errors import APIError, bad_request, unsupported
from .gateway import ServedModel
from .jobs import Event, Finished, GenerationJob, Text
from .responses import Answer, sse
from .schemas import chat_request

MAX_KEPT = 1024  # conversations kept for previous_response_id
Message = dict[str, Any]


class Responses:
    def __init__(self, completions: Completions) -> None:
        self.completions = completions
        # response id -> (who asked, the chat with its answer): ids name public sessions (the ledger shows
        # them), so only the client that got a response may continue it
        self._kept: OrderedDict[str, tuple[str, list[Message]]] = OrderedDict()

    async def create(self, request: Request) -> Response:
        self.completions.authorize(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        previous = body.get("previous_response_id")
        owner = _owner(request)
        history = self._history(previous, owner) if previous is not None else []
        messages = [*history, *input_messages(body.get("input"))]
        instructions = body.get("instructions")
        system = [{"role": "system", "content": instructions}] if instructions else []
        chat = {"model": body.get("model"), "messages": [*system, *messages], "max_tokens": body.get("max_output_tokens"),
                "temperature": body.get("temperature"), "top_p": body.get("top_p"), "tools": body.get("tools"),
                "tool_choice": body.get("tool_choice"), "parallel_tool_calls": body.get("parallel_tool_calls"),
                "response_format": text_format(body.get("text"))}
        req = await asyncio.get_running_loop().run_in_executor(None, chat_request, chat)
        if body.get("stream"):
            calls = req.tools is not None and req.tools.active
            return await self.completions.streamed(request, req, lambda served, job, first: self._events(
                served, job, first, body, messages, calls, owner))
        result = await self.completions.whole(request, req)
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        [answer], finished = result
        rid = "resp_" + finished.provenance.session_id
        self._keep(rid, owner, [*messages, answer_message(answer)])
        served = self.completions.gateway.model(req.model)
        status = "incomplete" if answer.finish_reason == "length" else "completed"
        return JSONResponse(response_json(rid, served.id, body, status, output_items(rid, answer), finished),
                            headers=finished.provenance.headers())

    async def _events(self, served: ServedModel, job: GenerationJob, first: Event, body: dict[str, Any],
                      messages: list[Message], calls: bool, owner: str) -> AsyncIterator[bytes]:
        rid = "resp_" + first.provenance.session_id  # type: ignore[union-attr]
        events = ResponseEvents(rid, served.id, body)
        reader = CallReader()
        yield events.opened()
        try:
            event = first
            while not isinstance(event, Finished):
                event = await job.next()
                if isinstance(event, Text):
                    deltas = reader.push(event.text) if calls else [Content(event.text)] if event.text else []
                    for delta in deltas:
                        yield events.delta(delta)
            self.completions.metrics.finished(served.id, event)
            for delta in reader.finish():
                yield events.delta(delta)
            answer = Answer(events.text, finish_reason=reader.finish_reason(event.finish_reason),
                            tool_calls=[c.to_json() for c in reader.calls])
            self._keep(rid, owner, [*messages, answer_message(answer)])
            yield events.closed(answer, event)
        except Exception as e:  # mid-stream: the status is sent, so the error travels as an event
            yield events.error(await self.completions.stream_error(e, job))

    def _history(self, previous: Any, owner: str) -> list[Message]:
        if not isinstance(previous, str) or self._kept.get(previous, ("",))[0] != owner:
            raise bad_request(f"Previous response with id {str(previous)[:80]!r} not found (this gateway keeps "
                              f"its last {MAX_KEPT} responses, in memory)", param="previous_response_id",
                              code="previous_response_not_found")
        self._kept.move_to_end(previous)
        return self._kept[previous][1]

    def _keep(self, rid: str, owner: str, messages: list[Message]) -> None:
        self._kept[rid] = (owner, messages)
        while len(self._kept) > MAX_KEPT:
            self._kept.popitem(last=False)


def _owner(request: Request) -> str:
    """Who asked: the API key sent (if any) and the address the gateway saw."""
    return f"{request.headers.get('authorization', '')}|{request.client.host if request.client else ''}"


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


def message_item(rid: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": "msg_" + rid[5:], "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}


def call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": "fc_" + call_id[5:], "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def output_items(rid: str, answer: Answer) -> list[dict[str, Any]]:
    items = [message_item(rid, answer.text)] if answer.text or not answer.tool_calls else []
    return items + [call_item(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in answer.tool_calls]


def response_json(rid: str, model: str, body: dict[str, Any], status: str, output: list[dict[str, Any]],
                  finished: Finished | None) -> dict[str, Any]:
    """The response object; `status` "in_progress" (no usage yet), "completed" or "incomplete"."""
    usage = None if finished is None else {
        "input_tokens": finished.prompt_tokens, "output_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None, "error": None,
            "model": model, "output": output, "instructions": body.get("instructions"),
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "previous_response_id": body.get("previous_response_id"), "text": body.get("text") or {"format": {"type": "text"}},
            "metadata": body.get("metadata") or {}, "usage": usage,
            **({} if finished is None else {"swarmlm": finished.provenance.to_json()})}


class ResponseEvents:
    """One streamed response's events, numbered, in the order OpenAI sends them."""

    def __init__(self, rid: str, model: str, body: dict[str, Any]) -> None:
        self.rid, self.model, self.body = rid, model, body
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # items begun, as they stand
        self.message: int | None = None  # the message item's index, once text came
        self.text = ""

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\n".encode() + sse(payload)

    def opened(self) -> bytes:
        response = response_json(self.rid, self.model, self.body, "in_progress", [], None)
        return self._event("response.created", response=response) + self._event("response.in_progress",
                                                                                 response=response)

    def delta(self, delta: Delta) -> bytes:
        if isinstance(delta, Content):
            out = b""
            if self.message is None:
                self.message = len(self.output)
                self.output.append(message_item(self.rid, "", "in_progress"))
                out += self._event("response.output_item.added", output_index=self.message, item=self.output[-1])
                out += self._event("response.content_part.added", item_id=self.output[-1]["id"],
                                   output_index=self.message, content_index=0,
                                   part={"type": "output_text", "text": "", "annotations": []})
            self.text += delta.text
            return out + self._event("response.output_text.delta", item_id=self.output[self.message]["id"],
                                     output_index=self.message, content_index=0, delta=delta.text, logprobs=[])
        if isinstance(delta, CallBegun):
            self.output.append(call_item(delta.id, delta.name, "", "in_progress"))
            return self._event("response.output_item.added", output_index=len(self.output) - 1, item=self.output[-1])
        assert isinstance(delta, CallArguments)
        index = [i for i, item in enumerate(self.output) if item["type"] == "function_call"][delta.index]
        self.output[index]["arguments"] += delta.text
        return self._event("response.function_call_arguments.delta", item_id=self.output[index]["id"],
                           output_index=index, delta=delta.text)

    def closed(self, answer: Answer, finished: Finished) -> bytes:
        """Each item's .done events, then response.completed (or .incomplete)."""
        out = b""
        for index, item in enumerate(self.output):
            if item["type"] == "message":
                done = message_item(self.rid, self.text)
                part = done["content"][0]
                out += self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=self.text, logprobs=[])
                out += self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=part)
            else:
                done = {**item, "status": "completed"}
                out += self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   arguments=item["arguments"])
            out += self._event("response.output_item.done", output_index=index, item=done)
        status = "incomplete" if answer.finish_reason == "length" else "completed"
        response = response_json(self.rid, self.model, self.body, status, output_items(self.rid, answer), finished)
        return out + self._event(f"response.{status}", response=response)

    def error(self, error: APIError) -> bytes:
        return self._event("error", code=error.code, message=error.message, param=error.param)
