"""A projection whose weight stays quantized in memory: `y = x @ W_t (+ bias)` like `blocks.Projection`.

The codes and scales are the derived store's tensors as stored, (out_features, …); each call
dequantizes the weight to float32, casts it to the compute dtype and multiplies. So a node computes
exactly the weights its root names, in the dtype it attests, and a float32 spot check of two such
nodes stays as tight as between two float32 nodes of a base store.

Why dequantize-per-matmul on CPU: measured on this project's 2-core AMD EPYC (torch 2.13, cores
shared with other work, so best of 40), SmolLM2-135M shapes, one block's four projections, in
microseconds (`python scripts/bench_quant.py --kernels`):

    path                          batch-1 decode   batch-8 decode   64-token prefill
    float32 x @ W_t (no quant)               754             1393               3722
    bfloat16 weights (no quant)              608              690               1377
    int8 dequantize, float32                1337             2116               4091
    nf4 dequantize, float32                 3309             4562               6644
    q4_1 dequantize, float32                2347             3246               5635
    int8 dequantize, bfloat16               1848             1869               2605
    torch.ao dynamic int8                    338              337                810
    _weight_int8pack_mm (per channel)       1154             9547              76191

With one block's weights warm in cache, a quantized span costs 1.8x (int8) to 4.4x (nf4) a float32
span per decode step. A whole model streams its weights from memory instead, where int8's 4x
smaller weights win: local generation of SmolLM2 (scripts/bench_quant.py, best of 5) runs at
37 tok/s in int8, 30 in float32, 21 in q4_1 and 13 in nf4. The fused torch paths lose or cheat:
`_weight_int8pack_mm` takes only per-channel scales and is 7-20x slower than float32 beyond
batch 1; `torch.ao` dynamic quantization is fastest but re-quantizes the weights per channel and
the activations on every call, so it would not compute the weights the root names, nor pass a
float32 spot check. nf4 decodes bytes through a 256-entry pair table (one gather: 2.5x faster
than splitting nibbles and indexing), q4_1 splits nibbles with shifts (2.6x faster than the
gather). On CUDA the dequantization is cheap next to the matmul; nf4 runs bitsandbytes' kernels on
our bytes as they are when bitsandbytes is installed (an optional import, not exercised on these
CPU-only machines); bitsandbytes' own int8 re-quantizes row by row, so int8 always dequantizes.
"""

from __future__ import annotations

import importlib.util
from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import _FUSED, Projection, ProjectionFactory, to_module_layout
from .manifest import Quantization
from .quant import dequantize


class QuantizedProjection(nn.Module):
    """Quantized codes and scales as buffers; `.to(dtype)` sets the compute dtype and casts only the bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool, quantization: Quantization) -> None:
        super().__init__()
        self.quantization = quantization
        self.compute_dtype = torch.float32
        g = quantization.group_size
        codes = (torch.empty(out_features, in_features, dtype=torch.int8) if quantization.scheme == "int8"
                 else torch.empty(out_features, in_features // 2, dtype=torch.uint8))
        scale_dtype = torch.float16 if quantization.scheme == "q4_1" else torch.float32
        self.register_buffer("qweight", codes)
        for name in quantization.parts[1:]:
            self.register_buffer(name, torch.empty(out_features, in_features // g, dtype=scale_dtype))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.shape = (out_features, in_features)
        self._bnb_state: Any = None

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    def weight(self) -> torch.Tensor:
        parts = {name: getattr(self, name) for name in self.quantization.parts}
        return dequantize(self.quantization, parts).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and self.quantization.scheme == "nf4" and _HAS_BITSANDBYTES:
            return self._bitsandbytes_nf4(x)
        return F.linear(x, self.weight(), self.bias)

    def _bitsandbytes_nf4(self, x: torch.Tensor) -> torch.Tensor:
        """bitsandbytes' 4-bit matmul on our bytes (its layout: flattened (out, in), blocks of the group size)."""
        import bitsandbytes
        from bitsandbytes.functional import QuantState, get_4bit_type

        if self._bnb_state is None:
            self._bnb_state = QuantState(absmax=self.scales.reshape(-1), shape=torch.Size(self.shape),
                                         code=get_4bit_type("nf4", device=self.device),
                                         blocksize=self.quantization.group_size, quant_type="nf4",
                                         dtype=self.compute_dtype)
        return bitsandbytes.matmul_4bit(x, self.qweight.view(-1, 1).t(), quant_state=self._bnb_state, bias=self.bias)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "QuantizedProjection":
        # Casting the codes or scales would change the weights the root names: they only move device.
        probe = fn(torch.empty(0, dtype=self.compute_dtype, device=self.qweight.device))
        self.compute_dtype = probe.dtype
        for name, t in self._buffers.items():
            if t is not None:
                self._buffers[name] = fn(t) if name == "bias" else t.to(probe.device)
        self._bnb_state = None
        return self

    def extra_repr(self) -> str:
        out_features, in_features = self.shape
        q = self.quantization
        return f"in={in_features}, out={out_features}, {q.scheme}/g{q.group_size}, compute={self.compute_dtype}"


def projection_factory(quantization: Quantization | None) -> ProjectionFactory:
    """What blocks build their projections with: plain float ones for a base store."""
    return Projection if quantization is None else partial(QuantizedProjection, quantization=quantization)


def quantized_module_layout(state: dict[str, torch.Tensor], quantization: Quantization) -> dict[str, torch.Tensor]:
    """One derived block's stored tensors → the module's layout: parts of q/k/v and gate/up joined by rows."""
    parts = set(quantization.parts)
    quantized = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in parts}
    out = to_module_layout({k: v for k, v in state.items() if k not in quantized})
    for fused, projections in _FUSED.items():
        for part in quantization.parts:
            names = [f"{p}.{part}" for p in projections]
            if all(n in quantized for n in names):
                quantized[f"{fused}.{part}"] = torch.cat([quantized.pop(n) for n in names])
    return {**out, **quantized}


_HAS_BITSANDBYTES = importlib.util.find_spec("bitsandbytes") is not None
