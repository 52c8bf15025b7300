"""The whole model in one process: our block stack and head, for local generation and as a reference."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import torch

from .blocks import BlockStack
from .generation import GenerativeModel
from .head import Head
from .kv_cache import KVCache
from .manifest import Manifest
from .store import ShardStore


class LocalRunner:
    """A `BlockRunner` over in-process blocks and one KV cache."""

    def __init__(self, stack: BlockStack, max_length: int) -> None:
        self.stack = stack
        self.cache: KVCache = stack.new_cache(1, max_length)

    def forward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        return self.stack(hidden, self.cache, start)

    async def aforward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        return await asyncio.to_thread(self._forward_no_grad, hidden, start)  # compute: off the event loop

    def _forward_no_grad(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        with torch.inference_mode():
            return self.forward(hidden, start)

    def close(self, length: int | None = None) -> None:
        self.cache = None  # type: ignore[assignment]  # free the memory now

    async def aclose(self, length: int | None = None) -> None:
        self.close(length)

    def served(self) -> None:
        return None


class LocalModel(GenerativeModel):
    def __init__(self, store: ShardStore, head: Head, stack: BlockStack, tokenizer: Any) -> None:
        super().__init__(head, tokenizer, store.config)
        self.store, self.stack = store, stack

    @property
    def manifest(self) -> Manifest:
        return self.store.manifest

    @classmethod
    def load(cls, store: ShardStore | Path | str, device: str = "cpu",
             dtype: torch.dtype | None = None) -> "LocalModel":
        store = store if isinstance(store, ShardStore) else ShardStore(store)
        stack = store.load_blocks(0, store.manifest.num_blocks, device, dtype)
        head = store.load_head(device, dtype)
        tokenizer = store.tokenizer() if store.manifest.tokenizer else None
        return cls(store, head, stack, tokenizer)

    def new_runner(self, max_length: int) -> LocalRunner:
        return LocalRunner(self.stack, max_length)

