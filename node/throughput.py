"""A node's own speed: decode tokens/s through its span on its device and dtype, measured once.

The figure is cached on disk per (model root, span, device, dtype), so restarts announce at once.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from shards.blocks import BlockStack

log = logging.getLogger(__name__)


def measure(stack: BlockStack, steps: int = 16, context: int = 64) -> float:
    """Median-free simple rate: `steps` single-token decode steps after a short prefill."""
    dtype, device = stack.dtype, stack.device
    with torch.inference_mode():
        cache = stack.new_cache(1, context + steps + 1)
        stack(torch.randn(1, context, stack.config.hidden_size, dtype=dtype, device=device), cache, 0)
        token = torch.randn(1, 1, stack.config.hidden_size, dtype=dtype, device=device)
        stack(token, cache, context)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for i in range(steps):
            stack(token, cache, context + 1 + i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - started)


def cached_throughput(cache_file: Path, key: str, stack: BlockStack) -> float:
    """The cached figure for `key`, measuring (and storing) it on first use."""
    try:
        cached = json.loads(cache_file.read_text())
    except (FileNotFoundError, ValueError):
        cached = {}
    if isinstance(cached.get(key), (int, float)) and cached[key] > 0:
        return float(cached[key])
    tps = measure(stack)
    log.info("measured %.1f tokens/s through blocks %d:%d", tps, stack.start, stack.end)
    cached[key] = round(tps, 2)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(cached, indent=1, sort_keys=True))
    tmp.replace(cache_file)
    return tps
