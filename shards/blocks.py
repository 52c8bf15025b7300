"""Llama-family transformer blocks (Llama 2/3, Mistral, Qwen2): our own modules, transformers is the oracle.

A block is pre-norm attention plus pre-norm SwiGLU MLP. Attention is grouped-query (multi-head
when the head counts match) through `scaled_dot_product_attention`, with RoPE and optional biases.
Shards keep the Hugging Face tensor names and layout; `to_module_layout` (the loader's conversion)
joins q/k/v and gate/up into single matrices and stores every projection transposed, (in, out):
a decode step then makes 4 matrix calls per block instead of 7, and `x @ W_t` runs about 1.6x
faster than `F.linear(x, W)` on the CPUs we measured (see scripts/bench_local.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache
from .rope import apply_rotary, cos_sin, inverse_frequencies


class Projection(nn.Module):
    """A linear map whose weight is stored transposed, (in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight_t
        return y if self.bias is None else y + self.bias


# What blocks build their projections with: (in_features, out_features, bias) -> a module computing
# `x @ W_t (+ bias)`; shards/quant_linear.py gives the one for quantized stores.
ProjectionFactory = Callable[[int, int, bool], nn.Module]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepContext:
    """What every block of a span needs for one step: RoPE tables, and how attention reaches the past.

    `attend(layer, q, k, v)` takes this step's rotated queries and keys, stores the keys and values
    wherever the step's cache keeps them, and returns the attention output: a dense session cache,
    a packed batch of paged sessions (shards/packed.py) or no cache at all share the block code.
    """

    cos: torch.Tensor
    sin: torch.Tensor
    attend: Attend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              is_causal: bool) -> torch.Tensor:
    """SDPA with grouped-query heads when the key/value heads are fewer than the query heads."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                          enable_gqa=q.shape[1] != k.shape[1])


def dense_attend(cache: KVCache | None, start: int, n: int, mask: torch.Tensor | None, is_causal: bool) -> Attend:
    """Attention for one step of a dense cache (or a stateless pass when `cache` is None)."""

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if cache is not None:
            end = start + n
            cache.keys[layer][:, :, start:end] = k
            cache.values[layer][:, :, start:end] = v
            k, v = cache.keys[layer][:, :, :end], cache.values[layer][:, :, :end]
        return attention(q, k, v, mask, is_causal)

    return attend


class Attention(nn.Module):
    def __init__(self, c: ModelConfig, projection: ProjectionFactory = Projection) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.split = [c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.num_kv_heads * c.head_dim]
        self.qkv_proj = projection(c.hidden_size, sum(self.split), c.qkv_bias)
        self.o_proj = projection(c.num_heads * c.head_dim, c.hidden_size, c.o_bias)

    def forward(self, x: torch.Tensor, ctx: StepContext, layer: int) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv_proj(x).split(self.split, dim=-1)
        q = q.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, ctx.cos, ctx.sin), apply_rotary(k, ctx.cos, ctx.sin)
        y = ctx.attend(layer, q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, c: ModelConfig, projection: ProjectionFactory = Projection) -> None:
        super().__init__()
        self.gate_up_proj = projection(c.hidden_size, 2 * c.intermediate_size, c.mlp_bias)
        self.down_proj = projection(c.intermediate_size, c.hidden_size, c.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, c: ModelConfig, projection: ProjectionFactory = Projection) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c, projection)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c, projection)

    def forward(self, x: torch.Tensor, ctx: StepContext, layer: int) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), ctx, layer)
        return h + self.mlp(self.post_attention_layernorm(h))


class BlockStack(nn.Module):
    """The contiguous blocks [start, end) of a model: what one node serves."""

    def __init__(self, config: ModelConfig, start: int, end: int, blocks: Sequence[Block] | None = None) -> None:
        super().__init__()
        self.config, self.start, self.end = config, start, end
        self.blocks = nn.ModuleList(blocks if blocks is not None else (Block(config) for _ in range(start, end)))
        # Not a buffer: `.to(dtype)` must never round RoPE frequencies to bfloat16.
        self.inv_freq = inverse_frequencies(config)

    def narrow(self, start: int, end: int) -> "BlockStack":
        """The sub-span [start, end) sharing these weights (a client may route through part of a node)."""
        if (start, end) == (self.start, self.end):
            return self
        if not self.start <= start < end <= self.end:
            raise ValueError(f"blocks {start}:{end} are not within {self.start}:{self.end}")
        return BlockStack(self.config, start, end, self.blocks[start - self.start:end - self.start])

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (norm weights keep it whatever form the projections' weights take)."""
        return self.blocks[0].input_layernorm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.blocks[0].input_layernorm.weight.device

    def new_cache(self, batch: int, max_length: int) -> KVCache:
        c = self.config
        return KVCache(len(self.blocks), batch, c.num_kv_heads, c.head_dim, max_length, self.dtype, self.device)

    def forward(self, hidden: torch.Tensor, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        """Run the span on `hidden` (batch, n, hidden) at slots [start, start + n).

        Without a cache the call is stateless: a fresh causal pass from position 0.
        """
        b, n, _ = hidden.shape
        if cache is None:
            if start != 0:
                raise ValueError("a stateless forward starts at position 0")
            positions = torch.arange(n, device=hidden.device).expand(b, n)
            return self.run(hidden, positions, dense_attend(None, 0, n, None, n > 1))
        cache.check_step(start, n)
        if start == 0 or n == 1:
            # Fast paths: a fresh causal prefill, or one new token that sees every cached slot.
            attend = dense_attend(cache, start, n, None, n > 1)
        else:
            attend = dense_attend(cache, start, n, attention_mask(start, n, hidden.device), False)
        hidden = self.run(hidden, cache.positions(start, n), attend)
        cache.length = start + n
        return hidden

    def run(self, hidden: torch.Tensor, positions: torch.Tensor, attend: Attend) -> torch.Tensor:
        """Every block on `hidden` at token `positions` (batch, n), attending through `attend`."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        cos, sin = cos_sin(self.inv_freq, positions, self.dtype)
        ctx = StepContext(cos, sin, attend)
        for i, block in enumerate(self.blocks):
            hidden = block(hidden, ctx, i)
        return hidden


def attention_mask(start: int, n: int, device: torch.device) -> torch.Tensor:
    """Boolean (1, 1, n, start+n) causal mask over slots, for queries at [start, start + n)."""
    q = torch.arange(start, start + n, device=device)[:, None]
    k = torch.arange(start + n, device=device)[None, :]
    return (k <= q)[None, None]


_FUSED = {"self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
          "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj")}


def to_module_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One block's Hugging Face-named tensors → this module's layout (fused, transposed projections)."""
    out = dict(state)
    for fused, parts in _FUSED.items():
        for kind in ("weight", "bias"):
            names = [f"{p}.{kind}" for p in parts]
            if all(n in out for n in names):
                out[f"{fused}.{kind}"] = torch.cat([out.pop(n) for n in names])
    return {transposed_name(k): v.t().contiguous() if k != transposed_name(k) else v for k, v in out.items()}


def transposed_name(name: str) -> str:
    """Projection weights are stored as `weight_t`; norms keep `weight`."""
    return name[: -len("weight")] + "weight_t" if name.endswith("_proj.weight") or name == "lm_head.weight" else name
