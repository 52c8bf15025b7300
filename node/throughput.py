"""A node's own speed: decode tokens/s through its span on its device and dtype, measured once.

The figure is cached on disk per (model root, span, device, dtype, torch threads) in one file per
machine (`$SWARMLM_HOME/throughput.json`, as Petals keeps its own), not per node: a node that moves to
blocks another node of this machine measured, or a fresh node beside it, announces at once. Measuring
was the larger part of a node's start-up (16 decode steps through its span after a prefill: about
60% of its CPU before it is ready on the CI machine, py-spy).

Beside one session's figure a node measures a batch's (`batch_size`: sessions stepping together), so
that clients price a loaded node at its batched step rather than at (1 + load) single steps, which
made a batched GPU look dozens of times slower than it is (routing/planner.py `batch_step`).
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
# Sessions stepping together for the batched figure: in the simulator (README, "Pricing a batching
# node") a batch of 64 recovered nearly all of batch pricing's gain, 16 most of the capacity but
# little of the p95 time per token. A node measures the largest batch up to this that its limits hold.
MEASURED_BATCH = 64
# A batch's decode steps after a short prefill: on a CPU each step costs about a batch of single steps
# (64 sessions through 10 of SmolLM2's blocks: 0.7 CPU-s, once per machine and span). The short context
# leaves out what long sessions add to a batched step (their KV reads): a first-order figure.
BATCH_STEPS, BATCH_CONTEXT = 2, 16
CONTEXT = 64  # tokens the one-session figure's session holds before its decode steps


def batch_size(max_batch_tokens: int, cache_tokens: int) -> int:
    """The batch a node measures: at most MEASURED_BATCH, no more decode rows than one forward takes
    (`--max-batch-tokens`), no more sessions than its pool holds at the measured length. Below 2, none."""
    fits = min(MEASURED_BATCH, max_batch_tokens, cache_tokens // (BATCH_CONTEXT + BATCH_STEPS + 1))
    return fits if fits >= 2 else 1


def measure(stack: BlockStack, steps: int = 16, context: int = CONTEXT, batch: int = 1) -> float:
    """Decode tokens/s of `batch` sessions together (all of their tokens): `steps` one-token decode steps
    after a short prefill; a simple rate, no median."""
    dtype, device = stack.dtype, stack.device
    with torch.inference_mode():
        cache = stack.new_cache(batch, context + steps + 1)
        stack(torch.randn(batch, context, stack.config.hidden_size, dtype=dtype, device=device), cache, 0)
        token = torch.randn(batch, 1, stack.config.hidden_size, dtype=dtype, device=device)
        stack(token, cache, context)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for i in range(steps):
            stack(token, cache, context + 1 + i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - started)


def cached_throughput(cache_file: Path, key: str, stack: BlockStack, batch: int = 1) -> float:
    """The cached figure for `key` (of `batch` sessions together), measuring (and storing) it on first
    use. Nodes of one machine share the file: each writes a whole new file and renames it into place, so
    a reader never sees a torn one; of two nodes measuring at once, one figure may be lost, and is
    measured again next time."""
    key = key if batch == 1 else f"{key}:batch{batch}"
    cached = _read(cache_file)
    if isinstance(cached.get(key), (int, float)) and cached[key] > 0:
        return float(cached[key])
    tps = measure(stack) if batch == 1 else measure(stack, BATCH_STEPS, BATCH_CONTEXT, batch)
    log.info("measured %.1f tokens/s through blocks %d:%d%s", tps, stack.start, stack.end,
             f" ({batch} sessions together)" if batch > 1 else "")
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
