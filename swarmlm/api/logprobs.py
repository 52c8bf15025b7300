"""Token log-probabilities in OpenAI's two shapes: chat's `logprobs.content` list and the legacy
completions object (tokens, token_logprobs, top_logprobs, text_offset).

A token's `bytes` are its exact bytes: with a byte-level BPE vocabulary (GPT-2, Llama 3, Qwen,
SmolLM) a token may hold part of a character, so the bytes come from the vocabulary's byte
alphabet, not from decoding the token alone (which gives U+FFFD); other vocabularies decode.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

from shards.logits_processing import TokenLogprob


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[str, int]:
    """GPT-2's map from the printable stand-in characters of byte-level BPE back to bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class TokenText:
    """A tokenizer's text and bytes for single token ids."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel"

    def text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def bytes(self, token: int) -> list[int]:
        if self.byte_level:
            alphabet = _byte_alphabet()
            piece = self.tokenizer.convert_ids_to_tokens(token)
            if all(c in alphabet for c in piece):
                return [alphabet[c] for c in piece]
        return list(self.text(token).encode())

    def chat_entry(self, token: int, logprob: float) -> dict[str, Any]:
        return {"token": self.text(token), "logprob": logprob, "bytes": self.bytes(token)}

    def chat(self, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
        """Chat's `choices[].logprobs` (whole or one chunk's tokens)."""
        return {"content": [{**self.chat_entry(lp.token_id, lp.logprob),
                             "top_logprobs": [self.chat_entry(t, v) for t, v in lp.top]} for lp in logprobs],
                "refusal": None}

    def legacy(self, logprobs: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
        """/v1/completions' `choices[].logprobs`; `offset` is where the first token's text starts in the answer."""
        tokens = [self.text(lp.token_id) for lp in logprobs]
        offsets = []
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        return {"tokens": tokens, "token_logprobs": [lp.logprob for lp in logprobs],
                "top_logprobs": [{self.text(t): v for t, v in lp.top} for lp in logprobs], "text_offset": offsets}
