"""A node's memory budget, and how much of it its KV-cache pool gets.

The budget is `--max-memory`, or 80% of the memory free when the node starts (on its device). It is
measured once, before any block is loaded: measured later, it would count the node's own blocks and
pool as taken. `--blocks auto` sizes its span from it (node/selection.py `blocks_for_budget`), and
`--grow-cache` its pool (`pool_tokens`).
"""

from __future__ import annotations

import torch

from .config import NodeConfig, parse_size
from .selection import cache_tokens_for_budget

FREE_FRACTION = 0.8  # of the free memory, without --max-memory: room for the process, its frames, the OS


def memory_budget(config: NodeConfig) -> int:
    """Bytes the node may take for blocks, cache and workspace."""
    if config.max_memory:
        return parse_size(config.max_memory)
    if config.device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(config.device))[0] * FREE_FRACTION)
    import psutil  # here: only a node sizing itself needs it, and every node start would pay its import

    return int(psutil.virtual_memory().available * FREE_FRACTION)


def pool_tokens(config: NodeConfig, budget: int, block_bytes: int, kv_bytes_per_token: int, blocks: int) -> int:
    """KV-cache tokens of the pool of a node serving `blocks` blocks: `--cache-tokens`; with `--grow-cache`,
    what `budget` (less what is not blocks: workspace, a ring's head) holds beside the blocks, never under
    `--cache-tokens` (cache_tokens_for_budget) and at most `grown_cap`."""
    if not config.grow_cache:
        return config.cache_tokens
    grown = cache_tokens_for_budget(budget, block_bytes, kv_bytes_per_token, blocks, config.cache_tokens)
    return max(config.cache_tokens, min(grown, grown_cap(config)))


def grown_cap(config: NodeConfig) -> int:
    """The most tokens a grown pool takes: `max_batch_tokens` sessions of `max_session_length`. One forward
    steps at most `max_batch_tokens` rows, so no more full-length sessions than that can ever decode on
    the node at once; a bigger pool would admit sessions that only queue behind the others' steps, and
    the planner, seeing its free cache, would keep sending more. With the defaults (512 x 8,192 tokens,
    about 1.4 TB of cache for a 70B model) it binds on no real card: it bounds a misread budget."""
    return config.max_batch_tokens * config.max_session_length
