"""OpenAI response objects for chat and text completions, whole or as server-sent-event chunks.

Every object carries the provenance extension under `swarmlm`: whole responses and the last
choice chunk of a stream (the chain that served to the end, receipted), and the first chunk (the
chain that produced the first token). A stream is `data: {json}\\n\\n` frames ending in
`data: [DONE]\\n\\n`; a failure mid-stream is a `data: {"error": …}` frame before [DONE].
"""

from __future__ import annotations

import json
import time
from typing import Any

from .jobs import Finished
from .provenance import Provenance

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def usage(finished: Finished) -> dict[str, int]:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


class Reply:
    """One response's id, model and kind (chat or text); builds its whole object or its chunks.

    The id names the swarm session (`chatcmpl-<session>`), so the provenance survives clients that
    drop unknown fields and headers: the session id finds the answer in every node's ledger.
    """

    def __init__(self, chat: bool, model: str, root: str, session: str, include_usage: bool = False) -> None:
        self.chat, self.model, self.include_usage = chat, model, include_usage
        self.id = ("chatcmpl-" if chat else "cmpl-") + session
        self.created = int(time.time())
        self.fingerprint = f"swarmlm-{root[:16]}"  # the weights, by content

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint, "choices": choices}

    def whole(self, text: str, finished: Finished) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                      "logprobs": None, "finish_reason": finished.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finished.finish_reason}
        body = self._envelope("chat.completion" if self.chat else "text_completion", [choice])
        return {**body, "usage": usage(finished), "swarmlm": finished.provenance.to_json()}

    def chunk(self, text: str, *, first: bool = False, finish_reason: str | None = None,
              provenance: Provenance | None = None) -> bytes:
        """A choice chunk: the first (chat: role 'assistant') and the last (finish_reason) carry provenance."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
            if finish_reason is not None and not text:
                delta = {}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
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
