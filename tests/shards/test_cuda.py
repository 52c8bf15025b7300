"""The CUDA path against the CPU reference: blocks, packed batches over paged caches, local generation.

Each test runs where CUDA exists and is skipped with the reason elsewhere; scripts/gpu_check.py
measures the same things (and speed) in one run on a GPU machine.
"""

from __future__ import annotations

import copy

import pytest
import torch

from routing.evidence import tolerance
from shards.local import LocalModel
from shards.packed import Segment, run_packed
from shards.paged_cache import PagePool, PagedSequence

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _worst_relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest per-position relative L2 error, the spot checks' measure."""
    ours, reference = ours.float().cpu(), reference.float().cpu()
    return float(((ours - reference).norm(dim=-1) / reference.norm(dim=-1)).max())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@torch.inference_mode()
def test_blocks_on_cuda_equal_the_cpu_reference_within_the_calibrated_tolerance(local_model, dtype):
    stack = local_model.stack
    prompt, step = torch.randn(1, 12, stack.config.hidden_size), torch.randn(1, 1, stack.config.hidden_size)
    cache = stack.new_cache(1, 16)
    want = torch.cat([stack(prompt, cache, 0), stack(step, cache, 12)], 1)
    cuda = copy.deepcopy(stack).to("cuda", getattr(torch, dtype))
    cache = cuda.new_cache(1, 16)
    got = torch.cat([cuda(prompt.to("cuda", cuda.dtype), cache, 0), cuda(step.to("cuda", cuda.dtype), cache, 12)], 1)
    assert _worst_relative(got, want) <= tolerance(dtype, "float32")


@torch.inference_mode()
def test_a_packed_batch_on_cuda_equals_the_cpu(local_model):
    cpu = local_model.stack.narrow(0, 4)
    cuda = copy.deepcopy(cpu).to("cuda")
    prompts = [torch.randn(n, cpu.config.hidden_size) for n in (5, 17, 9)]
    steps = torch.randn(3, cpu.config.hidden_size)
    outs = []
    for stack in (cpu, cuda):
        c = stack.config
        pool = PagePool(len(stack.blocks), c.num_kv_heads, c.head_dim, 16, page_tokens=8, device=stack.device)
        rows = [PagedSequence(pool) for _ in prompts]
        for row, p in zip(rows, prompts):
            row.resize(len(p) + 1)
        first = run_packed(stack, torch.cat(prompts).to(stack.device),
                           [Segment(len(p), 0, r) for p, r in zip(prompts, rows)])
        second = run_packed(stack, steps.to(stack.device), [Segment(1, len(p), r) for p, r in zip(prompts, rows)])
        outs.append(torch.cat([first, second]))
    assert _worst_relative(outs[1], outs[0]) <= tolerance("float32", "float32")


def test_greedy_generation_on_cuda_in_float32_equals_the_cpu(local_model):
    cuda = LocalModel.load(local_model.store, "cuda", torch.float32)
    want = local_model.generate("What is the capital of France?", 16, ignore_eos=True)
    assert cuda.generate("What is the capital of France?", 16, ignore_eos=True).token_ids == want.token_ids
