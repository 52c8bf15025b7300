"""Structured output by constrained decoding: OpenAI's `response_format` as a token mask.

Before each token is chosen, every token that cannot continue valid output gets logit -inf, so
the answer always parses (`json_object`) and validates against the schema (`json_schema`) once it
ends; the grammar ends the answer as soon as the value is complete. Log-probabilities still come
from the unmasked logits (they describe the model). With speculative decoding, drafts the grammar
refuses are cut before the trip, each verified position is masked for the grammar state after the
drafts before it, and the matcher is rolled back to the tokens actually emitted.

Engine: llguidance. Measured with SmolLM2's tokenizer (49,152 tokens) on this project's 2-core CPU
(scripts/bench_constrained.py), per token: xgrammar 0.2.9 ~25 us, llguidance 1.9.1 ~40-60 us,
outlines-core 0.2.14 ~150 us to fill the mask; per schema: llguidance 1-3 ms, xgrammar 10-14 ms,
outlines-core ~0.5 s (it builds a regex index over the whole vocabulary, and a regex cannot say
"any JSON object", which nests without bound). All are well under 1% of a decode step of even the
smallest model here, so the per-request compile (paid in time to first token) decides between
xgrammar and llguidance: llguidance is ahead for any answer under ~500 tokens, needs no further
dependency (xgrammar pulls in triton and a TVM runtime), names what it cannot compile in a
schema, and can roll back tokens, as speculation needs. Mask, -inf and advance together, as used
here: llguidance ~120 us per token, xgrammar with its own CPU kernel ~200 us; local generation
with a schema ran within ~2% of free generation's tokens per second.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import llguidance
import numpy as np
import torch

from ledger import bounds
from ledger.errors import EncodingError

from .errors import ShardsError

# `{"a": 1, "b": [2, 3]}`: json.dumps' spacing and no other whitespace, so a small model cannot
# wander off into endless blank lines between values.
# A schema arrives from any HTTP client and compiles on the caller's thread (the gateway's event loop):
# bounded so that compiling stays in milliseconds; real schemas are a few KiB.
SCHEMA_BOUNDS = bounds.Bounds(depth=32, items=4096, size=64 << 10, string=4096)
COMPACT_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class ResponseFormatError(ShardsError):
    """A `response_format` that is malformed or asks for what the grammar engine cannot compile."""


def json_grammar(response_format: dict[str, Any] | None) -> str | None:
    """The llguidance grammar for an OpenAI `response_format` (None for plain text), checked to compile."""
    schema = response_schema(response_format)
    return None if schema is None else schema_grammar(schema, "response_format schema")


def response_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema an OpenAI `response_format` asks for (None for plain text).

    `{"type": "text"}`, `{"type": "json_object"}` (any JSON object), or `{"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}, "strict": ...}}`; strict or not, the output follows
    the schema.
    """
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ResponseFormatError("response_format must be an object such as {\"type\": \"json_object\"}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ResponseFormatError("response_format.json_schema must be an object with a 'name'")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise ResponseFormatError("response_format.json_schema.schema must be a JSON Schema object")
    else:
        raise ResponseFormatError(f"response_format.type must be 'text', 'json_object' or 'json_schema', "
                                  f"got {kind!r:.40}")
    return schema


def schema_grammar(schema: dict[str, Any], what: str) -> str:
    """The llguidance grammar for a JSON schema from a client (named `what` in errors), bounded and
    checked to compile; compact JSON (`COMPACT_JSON`)."""
    try:
        bounds.check(schema, SCHEMA_BOUNDS, what)
    except EncodingError as e:
        raise ResponseFormatError(str(e)) from None
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=COMPACT_JSON)  # type: ignore[arg-type]
    except ValueError as e:
        raise ResponseFormatError(f"{what}: {e}") from None
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise ResponseFormatError(f"{what} is not supported: {messages[0]}")
    return grammar


@lru_cache(maxsize=4)
def _engine_tokenizer(tokenizer: Any, vocab_size: int, eos_ids: tuple[int, ...]) -> llguidance.LLTokenizer:
    """The engine's view of a tokenizer: built once per model (about a second). `llguidance.hf` imports
    transformers (about a second of CPU), which a process that never constrains an answer skips."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids))


class JsonConstraint:
    """One answer's grammar state: masks logits for the next token and follows the tokens emitted."""

    def __init__(self, grammar: str, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]) -> None:
        if tokenizer is None:
            raise ShardsError("structured output needs the model's tokenizer")
        self.vocab_size = vocab_size
        self.matcher = llguidance.LLMatcher(_engine_tokenizer(tokenizer, vocab_size, tuple(sorted(eos_ids))), grammar)
        self._check()
        self._bits = torch.zeros((vocab_size + 31) // 32, dtype=torch.int32)

    @property
    def done(self) -> bool:
        """The value is complete: nothing but the end of the answer may follow."""
        return self.matcher.is_stopped()

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """A row of logits (vocab,) with every token the grammar refuses next set to -inf."""
        self.matcher.unsafe_compute_mask_ptr(self._bits.data_ptr(), self._bits.numel() * 4)
        bits = np.unpackbits(self._bits.numpy().view(np.uint8), bitorder="little")[:logits.shape[-1]]
        allowed = torch.from_numpy(bits.view(np.bool_)).to(logits.device)
        return torch.where(allowed, logits.float(), float("-inf"))

    def mask_along(self, logits: torch.Tensor, drafts: Sequence[int]) -> torch.Tensor:
        """Rows (len(drafts) + 1, vocab): row i masked for the state after drafts[:i]; the state is
        left where it was (drafts must be valid, see `valid_prefix`)."""
        rows = []
        for i, row in enumerate(logits):
            rows.append(self.mask(row))
            if i < len(drafts):
                self.accept(drafts[i])
        if drafts:
            self.matcher.rollback(len(drafts))
        return torch.stack(rows)

    def valid_prefix(self, tokens: Sequence[int]) -> int:
        """How many of `tokens` the grammar accepts in a row from here."""
        return self.matcher.validate_tokens(list(tokens)) if tokens else 0

    def accept(self, token: int) -> None:
        self.matcher.consume_token(token)
        self._check()

    def _check(self) -> None:
        if self.matcher.is_error():
            raise ShardsError(f"structured output: {self.matcher.get_error()}")

