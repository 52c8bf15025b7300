"""A paged KV cache: one pool of fixed-size pages per node, shared by every session.

A session no longer reserves `max_length` slots up front: each of its rows (a `PagedSequence`)
takes pages as it grows, gives back the pages past its end when a step rewinds (speculative
rollback, a re-sent turn), and returns all of them when it closes. Pages are laid out
(layer, kv_head, page, slot, head_dim), so gathering a row's pages for attention is one
`index_select` per layer that yields a contiguous tensor. Nothing is shared between rows, so a
row can only ever read what it wrote.

Allocation happens on the event loop (admission of a step); the compute worker only reads and
writes page contents of rows whose page tables are fixed while their step runs.
"""

from __future__ import annotations

import threading

import torch

from .errors import CacheFullError

DEFAULT_PAGE_TOKENS = 64


def index_tensor(values: list[int], device: torch.device | str) -> torch.Tensor:
    """`values` as a long tensor on `device`. To a GPU through pinned memory without blocking: a plain
    host-to-device copy waits for the device's stream, so a step's indices would stall the CPU until
    the previous step finished instead of letting it queue the next one."""
    host = torch.tensor(values, dtype=torch.long)
    if torch.device(device).type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


class PagePool:
    """`num_pages` pages of `page_tokens` slots for every layer of a span."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, num_pages: int, *,
                 page_tokens: int = DEFAULT_PAGE_TOKENS, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        if num_pages < 1 or page_tokens < 1:
            raise ValueError(f"a page pool needs pages and slots, got {num_pages} x {page_tokens}")
        shape = (num_layers, num_kv_heads, num_pages, page_tokens, head_dim)
        # Uninitialised: a slot is read only after its row wrote it (reads stop at the row's end).
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.page_tokens, self.num_pages = page_tokens, num_pages
        self._free = list(range(num_pages - 1, -1, -1))
        self._lock = threading.Lock()

    @property
    def free_pages(self) -> int:
        return len(self._free)

    @property
    def used_pages(self) -> int:
        return self.num_pages - len(self._free)

    def pages_for(self, tokens: int) -> int:
        return -(-tokens // self.page_tokens)

    def take(self, n: int) -> list[int]:
        with self._lock:
            if n > len(self._free):
                raise CacheFullError(f"cache full: {n} more pages needed, {len(self._free)} of {self.num_pages} free")
            taken = [self._free.pop() for _ in range(n)]
        return taken

    def give_back(self, pages: list[int]) -> None:
        with self._lock:
            self._free.extend(reversed(pages))


class PagedSequence:
    """One row's cache: its page table and how many positions it holds."""

    def __init__(self, pool: PagePool) -> None:
        self.pool = pool
        self.pages: list[int] = []
        self.length = 0
        self.table = torch.empty(0, dtype=torch.long)  # page ids as a tensor, for indexing

    @property
    def num_pages(self) -> int:
        return len(self.pages)

    def pages_needed(self, end: int) -> int:
        """More pages this row must take to hold positions [0, end)."""
        return max(0, self.pool.pages_for(end) - len(self.pages))

    def resize(self, end: int) -> None:
        """Hold exactly the pages positions [0, end) need: take missing ones, give back the rest."""
        want = self.pool.pages_for(end)
        self.length = min(self.length, end)
        if want == len(self.pages):
            return  # most decode steps: the table stands (rebuilding it is a host-to-device copy)
        if want > len(self.pages):
            self.pages += self.pool.take(want - len(self.pages))
        else:
            self.pool.give_back(self.pages[want:])
            del self.pages[want:]
        self.table = index_tensor(self.pages, self.pool.keys.device)

    def release(self) -> None:
        self.resize(0)

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one layer's keys and values (kv_heads, n, head_dim) at positions [start, start + n)."""
        positions = torch.arange(start, start + k.shape[1], device=k.device)
        page = self.table[positions // self.pool.page_tokens]
        slot = positions % self.pool.page_tokens
        self.pool.keys[layer][:, page, slot] = k
        self.pool.values[layer][:, page, slot] = v

    def read(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer's keys and values for positions [0, end), as (1, kv_heads, end, head_dim)."""
        used = self.table[:self.pool.pages_for(end)]
        heads, _, slots, dim = self.pool.keys.shape[1:]
        k = self.pool.keys[layer].index_select(1, used).view(heads, -1, dim)[:, :end]
        v = self.pool.values[layer].index_select(1, used).view(heads, -1, dim)[:, :end]
        return k[None], v[None]
