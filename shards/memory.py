"""Memory-true sizes for placement: what a block, its KV cache and a quantized matmul really take.

A node sizing its span from shard files guesses wrong as soon as it computes in another dtype than
it stores, or holds quantized codes: the bytes here come from the very modules the loader builds
(on the meta device, so nothing is allocated), so they match what a loaded span holds.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Block
from .config import ModelConfig
from .manifest import Manifest
from .quant_linear import projection_factory
from .store import DTYPES



def module_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module`."""
    tensors = [*module.parameters(), *(b for b in module.buffers() if b is not None)]
    return sum(t.numel() * t.element_size() for t in tensors)


def block_bytes(manifest: Manifest, dtype: torch.dtype | None = None) -> int:
    """Bytes one loaded block of `manifest`'s store holds, computing in `dtype` (None: as stored).

    The same on every device: codes and scales move as they are, float tensors take `dtype`.
    A store mixing dtypes counts as float32 unless `dtype` is given.
    """
    with torch.device("meta"):
        block = Block(manifest.config, projection_factory(manifest.quantization))
    return module_bytes(block.to(dtype or DTYPES.get(manifest.dtype, torch.float32)))


def kv_bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
    """KV cache bytes one token takes in one block (keys and values)."""
    return 2 * config.num_kv_heads * config.head_dim * dtype.itemsize


# Transient bytes per weight while dequantizing: the float32 weight, plus nf4's int32 byte indices
# (two weights a byte) or q4_1's unpacked one-byte codes.
_DEQUANTIZE_BYTES = {"int8": 4, "nf4": 6, "q4_1": 5}


def dequantize_workspace_bytes(manifest: Manifest, dtype: torch.dtype | None = None) -> int:
    """Transient bytes of dequantizing the largest weight (and casting it to `dtype`); 0 for a base store.

    Needed once per process, not per block: projections run one at a time.
    """
    if manifest.quantization is None:
        return 0
    c = manifest.config
    largest = max(c.hidden_size * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim,
                  c.hidden_size * 2 * c.intermediate_size)
    cast = 0 if dtype in (None, torch.float32) else dtype.itemsize
    return largest * (_DEQUANTIZE_BYTES[manifest.quantization.scheme] + cast)
