"""One generation as a task on the server's event loop, its events queued for the response as they happen.

The SDK's asyncio API awaits the swarm on the loop (the gateway serves on the swarm client's own
loop, so no thread carries the I/O) and sends the torch work to worker threads: many requests run
through the swarm at once, each in its own session. Cancelling (the HTTP client went away) stops
the generation after the current token and closes the session, so the nodes free its cache and log
it with the gateway's receipt.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from .provenance import Provenance
from .schemas import GenerationRequest

if TYPE_CHECKING:
    from shards.logits_processing import TokenLogprob
    from swarmlm.sdk import RemoteModel


@dataclass(frozen=True)
class Opened:
    """The first token is out: the chain that produced it."""

    provenance: Provenance


@dataclass(frozen=True)
class Text:
    text: str  # may be empty when only log-probabilities are new (a character is still incomplete)
    index: int = 0  # which answer, when the request asked for n of them
    logprobs: tuple[TokenLogprob, ...] = ()  # its tokens', when the request asked for them


@dataclass(frozen=True)
class AnswerDone:
    """Answer `index` of several is complete; the last answer's end comes with `Finished`."""

    index: int
    finish_reason: str


@dataclass(frozen=True)
class Finished:
    """The session is closed (receipts sent); `provenance` is the chain that served to the end."""

    finish_reason: str  # the last answer's: "stop" (end of text or a stop sequence) or "length"
    prompt_tokens: int
    completion_tokens: int  # all answers'
    provenance: Provenance


Event = Union[Opened, Text, AnswerDone, Finished]


def finish_reason(tokenizer: object, tokens: list[int], max_tokens: int, stop: tuple[str, ...]) -> str:
    """'length' only when the budget ran out without a stop sequence in the text (which ends generation)."""
    if len(tokens) < max_tokens:
        return "stop"
    text = tokenizer.decode(tokens, skip_special_tokens=True)  # type: ignore[attr-defined]
    return "stop" if any(s and s in text for s in stop) else "length"


class GenerationJob:
    def __init__(self, model: RemoteModel, ids: list[int], max_tokens: int, request: GenerationRequest) -> None:
        self.model, self.ids, self.max_tokens, self.request = model, ids, max_tokens, request
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._cancelled = False

    def cancel(self) -> None:
        """Stop after the current token and close the session (idempotent)."""
        self._cancelled = True

    async def next(self) -> Event:
        """Opened (unless no token came), Text… (and AnswerDone between answers when n > 1), then Finished;
        a failure is raised where it happened."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _emit(self, item: Event | BaseException) -> None:
        self._queue.put_nowait(item)

    def refuse(self, error: Exception) -> None:
        """It will not run (pushed out of a full queue): its waiter gets `error`."""
        self._cancelled = True
        self._queue.put_nowait(error)

    async def run(self) -> None:
        """Generate; a failure reaches the waiter, where it becomes an HTTP error."""
        if self._cancelled:  # the client left while the request waited for its turn
            return
        try:
            await self._generate()
        except Exception as e:
            self._emit(e)

    async def _generate(self) -> None:
        """Answers one after the other in one session (they share the prompt's prefill)."""
        model, root, me, n = self.model, self.model.root, self.model.client.peer_id, self.request.n
        tokens: list[int] = []  # the current answer's
        answer = total = 0
        opened = False
        session = model.inference_session(len(self.ids) + self.max_tokens)
        try:
            stream = session.astream_choices(self.ids, n, self.max_tokens, **self.request.sampling())
            try:
                async for index, event in stream:
                    if not opened:
                        self._emit(Opened(Provenance.of(session.served, root, me)))  # type: ignore[arg-type]
                        opened = True
                    while answer < index:  # an answer that ended with no token yields no event
                        self._emit(AnswerDone(answer, self._reason(tokens)))
                        total, tokens, answer = total + len(tokens), [], answer + 1
                    if event.token_id is not None:
                        tokens.append(event.token_id)
                    if event.text or event.logprob is not None:
                        self._emit(Text(event.text, index, () if event.logprob is None else (event.logprob,)))
                    if self._cancelled:
                        break
            finally:
                await stream.aclose()
        finally:
            await session.aclose()
        if not self._cancelled:
            while answer < n - 1:
                self._emit(AnswerDone(answer, self._reason(tokens)))
                total, tokens, answer = total + len(tokens), [], answer + 1
        self._emit(Finished(self._reason(tokens), len(self.ids), total + len(tokens),
                            Provenance.of(session.served, root, me)))  # type: ignore[arg-type]

    def _reason(self, tokens: list[int]) -> str:
        return finish_reason(self.model.tokenizer, tokens, self.max_tokens, self.request.stop)
