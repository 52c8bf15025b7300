"""Static-shape decode steps (shards/graphed_decode.py) equal the dense cache's own steps, rows at any position."""

from __future__ import annotations

import pytest
import torch

from shards.graphed_decode import GraphedDecode

from .random_model import RandomModel

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none here")


def _reference_steps(stack, prompts: list[torch.Tensor], steps: torch.Tensor) -> torch.Tensor:
    """Each row alone on its own dense cache: prefill its prompt, then one step per column of `steps`."""
    outs = []
    for prompt, row_steps in zip(prompts, steps):
        cache = stack.new_cache(1, 64)
        stack(prompt[None], cache, 0)
        outs.append(torch.cat([stack(h[None, None], cache, len(prompt) + i) for i, h in enumerate(row_steps)], 1))
    return torch.cat(outs)


def _static_steps(stack, prompts: list[torch.Tensor], steps: torch.Tensor, graph: bool) -> torch.Tensor:
    """Rows of different prompt lengths in one static decoder: each row prefilled alone into its slots."""
    decode = GraphedDecode(stack, len(prompts), 64, graph=graph)
    for i, prompt in enumerate(prompts):
        row = stack.new_cache(1, 64)
        stack(prompt[None], row, 0)
        for layer in range(len(stack.blocks)):
            decode.cache.keys[layer][i] = row.keys[layer][0]
            decode.cache.values[layer][i] = row.values[layer][0]
    positions = torch.tensor([len(p) for p in prompts], device=stack.device)
    return torch.cat([decode.step(steps[:, i, None], positions + i).clone() for i in range(steps.shape[1])], 1)


@torch.inference_mode()
def _inputs(stack, device: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hidden = stack.config.hidden_size
    prompts = [torch.randn(n, hidden, generator=g).to(device) for n in (3, 7, 12)]
    return prompts, torch.randn(3, 5, hidden, generator=g).to(device)


@torch.inference_mode()
def test_static_steps_equal_dense_cache_steps_with_rows_at_different_positions():
    stack = RandomModel().stack
    prompts, steps = _inputs(stack, "cpu")
    ours, ref = _static_steps(stack, prompts, steps, graph=False), _reference_steps(stack, prompts, steps)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_a_graph_is_refused_off_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        GraphedDecode(RandomModel().stack, 1, 8, graph=True)


@CUDA
@torch.inference_mode()
def test_graphed_steps_on_cuda_equal_the_cpu_reference():
    stack = RandomModel().stack
    prompts, steps = _inputs(stack, "cpu")
    ref = _reference_steps(stack, prompts, steps)
    cuda = stack.to("cuda")
    prompts, steps = [p.cuda() for p in prompts], steps.cuda()
    assert (_static_steps(cuda, prompts, steps, graph=True).cpu() - ref).abs().max().item() <= 1e-4
