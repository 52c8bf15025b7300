"""The whole model in one process: our block stack and head, for local generation and as a reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .blocks import BlockStack
from .generation import Generation, Prompt, Session, TokenEvent, encode_prompt
from .head import Head
from .kv_cache import KVCache
from .store import ShardStore


class LocalRunner:
    """A `BlockRunner` over in-process blocks and one KV cache."""

    def __init__(self, stack: BlockStack, max_length: int) -> None:
        self.stack = stack
        self.cache: KVCache = stack.new_cache(1, max_length)

    def forward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        return self.stack(hidden, self.cache, start)

    def close(self) -> None:
        self.cache = None  # type: ignore[assignment]  # free the memory now


class LocalModel:
    def __init__(self, store: ShardStore, head: Head, stack: BlockStack, tokenizer: Any) -> None:
        self.store, self.head, self.stack, self.tokenizer = store, head, stack, tokenizer
        eos = set(store.config.eos_token_ids)
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.eos_ids = eos

    @classmethod
    def load(cls, store: ShardStore | Path | str, device: str = "cpu",
             dtype: torch.dtype | None = None) -> "LocalModel":
        store = store if isinstance(store, ShardStore) else ShardStore(store)
        stack = store.load_blocks(0, store.manifest.num_blocks, device, dtype)
        head = store.load_head(device, dtype)
        tokenizer = store.tokenizer() if store.manifest.tokenizer else None
        return cls(store, head, stack, tokenizer)

    def inference_session(self, max_length: int | None = None) -> Session:
        max_length = max_length or self.store.config.max_context
        return Session(self.head, self.tokenizer, LocalRunner(self.stack, max_length), max_length, self.eos_ids)

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, *, raw: bool = False, **kwargs: Any) -> Generation:
        """One-shot generation in a session sized for this prompt (see Session.generate for options)."""
        ids = encode_prompt(self.tokenizer, prompt, raw)
        with self.inference_session(min(len(ids) + max_new_tokens, self.store.config.max_context)) as s:
            return s.generate(ids, max_new_tokens, **kwargs)

    def stream(self, prompt: Prompt, max_new_tokens: int = 64, *, raw: bool = False,
               **kwargs: Any) -> Iterator[TokenEvent]:
        ids = encode_prompt(self.tokenizer, prompt, raw)
        with self.inference_session(min(len(ids) + max_new_tokens, self.store.config.max_context)) as s:
            yield from s.stream(ids, max_new_tokens, **kwargs)


def logits_of(model: LocalModel, ids: Sequence[int]) -> torch.Tensor:
    """Full-sequence float32 logits (1, n, vocab): the reference used by tests and audits."""
    with torch.inference_mode():
        return model.head.logits(model.stack(model.head.embed(torch.tensor([list(ids)]))))
