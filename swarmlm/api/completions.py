"""The OpenAI endpoints: /v1/models, /v1/chat/completions and /v1/completions, whole or streamed.

A response starts once the first token is out, so its headers can name the chain that produced
it and a swarm that cannot serve the model is a clean 503, not a broken stream. A client that
disconnects (while waiting or mid-stream) cancels its generation, which closes the swarm session.
A stream that waits on the swarm sends a keep-alive comment every `--keepalive` seconds.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from routing.tasks import background

from .errors import APIError, bad_request, unauthorized
from .gateway import Gateway, ServedModel
from .jobs import AnswerDone, Event, Finished, GenerationJob, Text
from .keepalive import with_keepalive
from .logprobs import TokenText
from .metrics import Metrics
from .responses import DONE, Answer, ChoiceChunks, Reply, sse
from .schemas import GenerationRequest, chat_request, completion_request

log = logging.getLogger(__name__)
T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's status for a client that left before the answer; nobody receives it
MAX_BODY = 4 << 20  # bytes: far more than a full context of text, far less than what would hurt the gateway
MAX_DEPTH = 64  # JSON nesting: requests use under 10 levels (schemas are bounded at 32 on their own)


class _ClientGone(Exception):
    pass


async def read_json(request: Request) -> Any:
    """The body as JSON, read only up to MAX_BODY bytes (however the client sends it); a client that
    leaves while sending it gets a quiet 499 (it was a traceback in the log)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise APIError(413, f"the request body exceeds {MAX_BODY // (1 << 20)} MiB",
                               code="request_too_large")
    except ClientDisconnect:
        raise APIError(CLIENT_CLOSED, "the client left while sending its request", code="client_closed") from None
    try:
        value = json.loads(body)
        deep = _deeper_than(value, MAX_DEPTH)  # shallower than the parser's limit, it would recurse later
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None
    except RecursionError:  # the parser recurses per level: a body nested past ~1000 stops it here
        deep = True
    if deep:
        raise bad_request(f"the request body is nested deeper than {MAX_DEPTH} levels", code="too_deep")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests lists or maps more than `limit` deep (iterative: no recursion of its own)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


async def _unless_gone(request: Request, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, or raise _ClientGone as soon as the HTTP client disconnects."""
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waiting, watcher = background(awaitable, "a completion"), background(gone(), "a request's disconnect watch")
    try:
        await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not waiting.done():
        waiting.cancel()
        raise _ClientGone
    return waiting.result()


class Completions:
    def __init__(self, gateway: Gateway, metrics: Metrics) -> None:
        self.gateway, self.metrics = gateway, metrics
        key = gateway.settings.api_key
        self._key = key.encode() if key else None

    def authorize(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._key):
            raise unauthorized(bool(given))

    async def list_models(self, request: Request) -> Response:
        self.authorize(request)
        return JSONResponse({"object": "list", "data": [self._model_json(m) for m in self.gateway.models]})

    async def get_model(self, request: Request) -> Response:
        self.authorize(request)
        return JSONResponse(self._model_json(self.gateway.model(request.path_params["model"]).id))

    def _model_json(self, name: str) -> dict[str, Any]:
        served = self.gateway.models[name]
        manifest = served.remote.store.manifest
        return {"id": served.id, "object": "model", "created": served.created, "owned_by": "swarmlm",
                "swarmlm": {"model_root": served.root, "num_blocks": manifest.num_blocks,
                            "max_context": served.remote.config.max_context}}

    async def chat(self, request: Request) -> Response:
        return await self._answer(request, chat_request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._answer(request, completion_request, chat=False)

    async def _answer(self, request: Request, parse: Callable[[Any], GenerationRequest], chat: bool) -> Response:
        self.authorize(request)
        body = await read_json(request)
        # off the loop: a request's tool and response_format schemas compile in up to a few hundred ms
        req = await asyncio.get_running_loop().run_in_executor(None, parse, body)
        return await self._complete(request, req, chat=chat)

    async def _complete(self, request: Request, req: GenerationRequest, chat: bool) -> Response:
        if req.stream:
            def frames(served: ServedModel, job: GenerationJob, first: Event) -> AsyncIterator[bytes]:
                session = first.provenance.session_id  # type: ignore[union-attr]
                reply = Reply(chat, served.id, served.root, session, req.include_usage, self._tokens(served, req))
                return self._stream(reply, job, first)
            return await self.streamed(request, req, frames)
        result = await self.whole(request, req)
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        (answers, finished), served = result, self.gateway.model(req.model)
        reply = Reply(chat, served.id, served.root, finished.provenance.session_id, tokens=self._tokens(served, req))
        return JSONResponse(reply.whole(answers, finished), headers=finished.provenance.headers())

    async def whole(self, request: Request, req: GenerationRequest) -> tuple[list[Answer], Finished] | None:
        """A request's answers, generated to the end (None: the client left)."""
        served = self.gateway.model(req.model)
        job = await self.gateway.start(req, request.client.host if request.client else "")
        try:
            answers, finished = await _unless_gone(request, self._collect(job))
        except _ClientGone:
            return None
        except Exception as e:
            raise await self._api_error(e, job) from None
        finally:
            self.gateway.finished(job)
        self.metrics.finished(served.id, finished)
        return answers, finished

    async def streamed(self, request: Request, req: GenerationRequest,
                       frames: Callable[[ServedModel, GenerationJob, Event], AsyncIterator[bytes]]) -> Response:
        """A server-sent-event stream of `frames(served, job, first)` once the first event is out (Opened, or
        Finished when no token came), so its headers name the chain; the frames report errors themselves
        and call `metrics.finished`."""
        served = self.gateway.model(req.model)
        job = await self.gateway.start(req, request.client.host if request.client else "")
        began = time.perf_counter()
        streaming = False  # once the stream is handed over, its background task finishes the job
        try:
            first = await _unless_gone(request, job.next())
            self.metrics.first_token.labels(served.id).observe(time.perf_counter() - began)
            headers = {**first.provenance.headers(), "Cache-Control": "no-cache"}  # type: ignore[union-attr]
            body = with_keepalive(frames(served, job, first), self.gateway.settings.keepalive)
            streaming = True
            # the background task runs however the stream ends, also when the client stopped reading
            return StreamingResponse(body, media_type="text/event-stream", headers=headers,
                                     background=BackgroundTask(self._finished, job))
        except _ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        except Exception as e:
            raise await self._api_error(e, job) from None
        finally:
            if not streaming:
                self.gateway.finished(job)

    async def stream_error(self, error: Exception, job: GenerationJob) -> APIError:
        """What a generation raised mid-stream, as the error event to send (logged when it is a bug)."""
        try:
            api_error = await self._api_error(error, job)
        except Exception:
            log.exception("generation failed mid-stream")
            api_error = APIError(500, f"internal error: {type(error).__name__}", type="server_error")
        self.metrics.error(api_error)
        return api_error

    async def _finished(self, job: GenerationJob) -> None:
        self.gateway.finished(job)

    async def _api_error(self, error: Exception, job: GenerationJob) -> APIError:
        return await self.gateway.api_error(error, job.request.model, len(job.ids) + job.max_tokens)

    @staticmethod
    def _tokens(served: ServedModel, req: GenerationRequest) -> TokenText | None:
        return None if req.logprobs is None else TokenText(served.remote.tokenizer)

    @staticmethod
    async def _collect(job: GenerationJob) -> tuple[list[Answer], Finished]:
        answers = [Answer() for _ in range(job.request.n)]
        while not isinstance(event := await job.next(), Finished):
            if isinstance(event, Text):
                answers[event.index].text += event.text
                answers[event.index].logprobs.extend(event.logprobs)
            elif isinstance(event, AnswerDone):
                answers[event.index].finish_reason = event.finish_reason
        answers[-1].finish_reason = event.finish_reason
        if job.request.tools is not None and job.request.tools.active:
            for answer in answers:
                answer.read_calls()
        return answers, event

    async def _stream(self, reply: Reply, job: GenerationJob, first: Event) -> AsyncIterator[bytes]:
        try:
            event = first
            yield reply.chunk("", first=True, provenance=event.provenance)  # type: ignore[union-attr]
            begun = {0}
            tools = job.request.tools
            texts = ChoiceChunks(reply, calls=tools is not None and tools.active)
            while not isinstance(event, Finished):
                event = await job.next()
                if isinstance(event, Text):
                    if event.index not in begun:  # the next of n answers
                        begun.add(event.index)
                        yield reply.chunk("", index=event.index, first=True)
                    for chunk in texts.text(event.index, event.text, event.logprobs):
                        yield chunk
                elif isinstance(event, AnswerDone):
                    chunks, reason = texts.end(event.index, event.finish_reason)
                    for chunk in chunks:
                        yield chunk
                    yield reply.chunk("", index=event.index, finish_reason=reason)
            self.metrics.finished(reply.model, event)
            chunks, reason = texts.end(job.request.n - 1, event.finish_reason)
            for chunk in chunks:
                yield chunk
            yield reply.chunk("", index=job.request.n - 1, finish_reason=reason, provenance=event.provenance)
            if reply.include_usage:
                yield reply.usage_chunk(event)
        except Exception as e:  # mid-stream: the status is sent, so the error travels as an event
            yield sse((await self.stream_error(e, job)).body())
        yield DONE
