"""A node's own speed: decode tokens/s through its span on its device and dtype, measured once.

The figure is cached on disk per (model root, span, device, dtype, torch threads) in one file per
machine (`$SWARMLM_HOME/throughput.json`, as Petals keeps its own), not per node: a node that moves to
blocks another node of this machine measured, or a fresh node beside it, announces at once. Measuring
was the larger part of a node's start-up (16 decode steps through its span after a prefill: about
60% of its CPU before it is ready on the CI machine, py-spy).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
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
    """The cached figure for `key`, measuring (and storing) it on first use. Nodes of one machine share
    the file: each writes a whole new file and renames it into place, so a reader never sees a torn
    one; of two nodes measuring at once, one figure may be lost, and is measured again next time."""
    cached = _read(cache_file)
    if isinstance(cached.get(key), (int, float)) and cached[key] > 0:
        return float(cached[key])
    tps = measure(stack)
    log.info("measured %.1f tokens/s through blocks %d:%d", tps, stack.start, stack.end)
    cached = _read(cache_file)  # what others stored while this node measured
    cached[key] = round(tps, 2)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=cache_file.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(cached, f, indent=1, sort_keys=True)
    os.replace(tmp, cache_file)
    return tps


def _read(cache_file: Path) -> dict:
    try:
        cached = json.loads(cache_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}
