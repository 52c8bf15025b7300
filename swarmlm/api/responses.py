"""OpenAI response objects for chat and text completions, whole or as server-sent-event chunks.

Every object carries the provenance extension under `swarmlm`: whole responses and the last
choice chunk of a stream (the chain that served to the end, receipted), and the first chunk (the
chain that produced the first token). A stream is `data: {json}\\n\\n` frames ending in
`data: [DONE]\\n\\n`; a failure mid-stream is a `data: {"error": …}` frame before [DONE].

Answers to requests with tools are read (shards.tool_calls.CallReader): calls leave as
`message.tool_calls` with `content` null, or streamed as OpenAI does: a delta naming the call's
id and function with empty arguments, then deltas with pieces of the arguments' JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from shards.logits_processing import TokenLogprob
from shards.tool_calls import CallArguments, CallBegun, CallReader, Content, Delta

from .jobs import Finished
from .logprobs import TokenText
from .provenance import Provenance

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def usage(finished: Finished) -> dict[str, int]:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


@dataclass
class Answer:
    """One choice of a whole response, as collected from its job's events."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def read_calls(self) -> None:
        """Split the text into content and calls (for a request whose answer may call tools)."""
        reader = CallReader()
        reader.push(self.text)
        reader.finish()
        self.text, self.tool_calls = reader.content, [c.to_json() for c in reader.calls]
        self.finish_reason = reader.finish_reason(self.finish_reason)


class Reply:
    """One response's id, model and kind (chat or text); builds its whole object or its chunks.

    The id names the swarm session (`chatcmpl-<session>`), so the provenance survives clients that
    drop unknown fields and headers: the session id finds the answer in every node's ledger.
    `tokens` (given when the request asked for log-probabilities) spells them out per token.
    """

    def __init__(self, chat: bool, model: str, root: str, session: str, include_usage: bool = False,
                 tokens: TokenText | None = None) -> None:
        self.chat, self.model, self.include_usage, self.tokens = chat, model, include_usage, tokens
        self.id = ("chatcmpl-" if chat else "cmpl-") + session
        self.created = int(time.time())
        self.fingerprint = f"swarmlm-{root[:16]}"  # the weights, by content
        self._offsets: dict[int, int] = {}  # per answer: where the next streamed token's text starts

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint, "choices": choices}

    def _logprobs(self, index: int, logprobs: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        """The choice's `logprobs` for these tokens (None when not asked for); legacy offsets run on per answer."""
        if self.tokens is None or not logprobs:
            return None
        if self.chat:
            return self.tokens.chat(logprobs)
        body = self.tokens.legacy(logprobs, self._offsets.get(index, 0))
        self._offsets[index] = body["text_offset"][-1] + len(body["tokens"][-1])
        return body

    def whole(self, answers: list[Answer], finished: Finished) -> dict[str, Any]:
        choices = []
        for i, a in enumerate(answers):
            logprobs = self._logprobs(i, a.logprobs)
            if self.tokens is not None and logprobs is None:  # asked for, but the answer has no tokens
                logprobs = self.tokens.chat([]) if self.chat else self.tokens.legacy([])
            if self.chat:
                message = {"role": "assistant", "content": a.text, "refusal": None}
                if a.tool_calls:
                    message.update(content=a.text or None, tool_calls=a.tool_calls)
                choices.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": a.finish_reason})
            else:
                choices.append({"index": i, "text": a.text, "logprobs": logprobs, "finish_reason": a.finish_reason})
        body = self._envelope("chat.completion" if self.chat else "text_completion", choices)
        return {**body, "usage": usage(finished), "swarmlm": finished.provenance.to_json()}

    def chunk(self, text: str, *, index: int = 0, first: bool = False, finish_reason: str | None = None,
              logprobs: Sequence[TokenLogprob] = (), provenance: Provenance | None = None,
              tool_call: dict[str, Any] | None = None) -> bytes:
        """A choice chunk: the first (chat: role 'assistant') and the last (finish_reason) carry provenance;
        `tool_call` makes it a piece of a call instead of text."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
            if finish_reason is not None and not text:
                delta = {}
            if tool_call is not None:
                delta = {"tool_calls": [tool_call]}
            choice: dict[str, Any] = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": text}
        choice.update(logprobs=self._logprobs(index, logprobs), finish_reason=finish_reason)
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [choice])
        if self.include_usage:
            body["usage"] = None
        if provenance is not None:
            body["swarmlm"] = provenance.to_json()
        return sse(body)

    def usage_chunk(self, finished: Finished) -> bytes:
        """After the last choice chunk when stream_options.include_usage is set: no choices, the usage."""
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [])
        return sse({**body, "usage": usage(finished)})


class ChoiceChunks:
    """A stream's answers as text chunks, or, when the answer may call tools (`calls`), as content and
    tool-call chunks: text that may begin a call is held back (CallReader), and so are its tokens'
    log-probabilities, which leave with the next chunk.
    """

    def __init__(self, reply: Reply, calls: bool) -> None:
        self.reply, self.calls = reply, calls
        self.readers: dict[int, CallReader] = {}
        self.logprobs: dict[int, list[TokenLogprob]] = {}

    def text(self, index: int, text: str, logprobs: Sequence[TokenLogprob] = ()) -> list[bytes]:
        if not self.calls:
            return [self.reply.chunk(text, index=index, logprobs=logprobs)]
        self.logprobs.setdefault(index, []).extend(logprobs)
        return self._chunks(index, self.readers.setdefault(index, CallReader()).push(text))

    def end(self, index: int, finish_reason: str) -> tuple[list[bytes], str]:
        """The chunks held back at the end of answer `index`, and its finish reason."""
        if not self.calls:
            return [], finish_reason
        reader = self.readers.setdefault(index, CallReader())
        chunks = self._chunks(index, reader.finish())
        if self.logprobs.get(index):
            chunks.append(self.reply.chunk("", index=index, logprobs=self.logprobs.pop(index)))
        return chunks, reader.finish_reason(finish_reason)

    def _chunks(self, index: int, deltas: list[Delta]) -> list[bytes]:
        out = []
        for delta in deltas:
            logprobs, self.logprobs[index] = self.logprobs.get(index, []), []
            if isinstance(delta, Content):
                out.append(self.reply.chunk(delta.text, index=index, logprobs=logprobs))
            elif isinstance(delta, CallBegun):
                call = {"index": delta.index, "id": delta.id, "type": "function",
                        "function": {"name": delta.name, "arguments": ""}}
                out.append(self.reply.chunk("", index=index, logprobs=logprobs, tool_call=call))
            elif isinstance(delta, CallArguments):
                call = {"index": delta.index, "function": {"arguments": delta.text}}
                out.append(self.reply.chunk("", index=index, logprobs=logprobs, tool_call=call))
        return out
