"""Weight quantization schemes for derived stores: deterministic, so a quantized root is verifiable.

Anyone holding the base store re-derives byte-identical quantized shards: every step is an
elementwise IEEE float32 operation (division, rounding half to even, comparisons) or an exact
reduction (max, min), with no accumulation whose order could differ between machines.

Each projection weight (out_features, in_features) is cut into groups of `group_size` along
in_features (so a group never straddles a row) and stored as parts, all with out_features rows:

| scheme | codes (`qweight`)                  | per group                         | bytes/weight (g) |
| ------ | ---------------------------------- | --------------------------------- | ---------------- |
| int8   | int8, w = q * scale, q in -127..127 | float32 `scales` = absmax / 127   | 1.125 (32)       |
| nf4    | 4-bit NF4 index, two per byte       | float32 `scales` = absmax         | 0.5625 (64)      |
| q4_1   | 4-bit q in 0..15, two per byte      | float16 `scales` d and `mins` m: w = q * d + m | 0.625 (32) |

nf4 is bitsandbytes' layout exactly (its NF4 table, float32 absmax per block of the flattened
weight, the first of two values in the high nibble), so its CUDA kernels run our bytes as they are.
q4_1 is GGUF's Q4_1 arithmetic and int8 with groups of 32 is GGUF's Q8_0 arithmetic: re-quantizing
weights dequantized from such a GGUF recovers the same codes and scales, so the derived store
loses nothing further (see `lossless_for`).
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import ShardsError
from .manifest import GROUP_SIZES, Quantization

# bitsandbytes' NF4 code book (quantiles of a standard normal, scaled to [-1, 1]).
NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])
_NF4_MIDPOINTS = (NF4[1:] + NF4[:-1]) / 2
# One byte holds two 4-bit codes, the first in the high nibble: byte -> (first, second) values.
_NIBBLES = torch.stack((torch.arange(256) >> 4, torch.arange(256) & 15), -1)
_NF4_PAIRS = NF4[_NIBBLES].contiguous()
_NF4_ON_DEVICE: dict[torch.device, torch.Tensor] = {}


def quantize(quantization: Quantization, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parts storing `weight` (out_features, in_features)."""
    out_features, in_features = weight.shape
    g = quantization.group_size
    if in_features % g:
        raise ShardsError(f"group size {g} does not divide in_features {in_features}; "
                          f"choose another of {', '.join(map(str, GROUP_SIZES))}")
    return _QUANTIZE[quantization.scheme](weight.float().reshape(out_features, in_features // g, g))


def dequantize(quantization: Quantization, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The float32 weight (out_features, in_features) that `parts` stand for."""
    return _DEQUANTIZE[quantization.scheme](parts, quantization.group_size)


def lossless_for(gguf_types: set[str]) -> Quantization | None:
    """The derived store that loses nothing further for a GGUF whose block weights have these types."""
    if gguf_types == {"Q8_0"}:
        return Quantization("int8", 32)
    if gguf_types == {"Q4_1"}:
        return Quantization("q4_1", 32)
    return None


def _safe_divide(x: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
    """x / by, and 0 where `by` is 0 (an all-zero group)."""
    return torch.where(by > 0, x / torch.where(by > 0, by, 1.0), 0.0)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    codes = _flat(codes).to(torch.uint8)
    return (codes[:, 0::2] << 4) | codes[:, 1::2]




def _int8_quantize(groups: torch.Tensor) -> dict[str, torch.Tensor]:
    scales = groups.abs().amax(-1, keepdim=True) / 127
    q = _safe_divide(groups, scales).round().clamp(-127, 127).to(torch.int8)
    return {"qweight": _flat(q), "scales": _flat(scales)}


def _int8_dequantize(parts: dict[str, torch.Tensor], group_size: int) -> torch.Tensor:
    q = parts["qweight"]
    w = q.float().view(q.shape[0], -1, group_size).mul_(parts["scales"].float().unsqueeze(-1))
    return w.view(q.shape)


def _nf4_quantize(groups: torch.Tensor) -> dict[str, torch.Tensor]:
    absmax = groups.abs().amax(-1, keepdim=True)
    scaled = _safe_divide(groups, absmax).clamp(-1, 1)
    codes = torch.bucketize(scaled, _NF4_MIDPOINTS)  # nearest code; a tie goes to the lower one
    return {"qweight": _pack_nibbles(codes), "scales": _flat(absmax)}


def _nf4_pairs(device: torch.device) -> torch.Tensor:
    """The pair table on `device`, copied there once (not per matmul)."""
    table = _NF4_ON_DEVICE.get(device)
    if table is None:
        table = _NF4_ON_DEVICE[device] = _NF4_PAIRS.to(device)
    return table


def _nf4_dequantize(parts: dict[str, torch.Tensor], group_size: int) -> torch.Tensor:
    packed = parts["qweight"]
    # One gather of (first, second) value pairs by byte: the fastest NF4 decoding measured on CPU.
    pairs = _nf4_pairs(packed.device).index_select(0, packed.reshape(-1).int())
    w = pairs.view(packed.shape[0], -1, group_size).mul_(parts["scales"].float().unsqueeze(-1))
    return w.view(packed.shape[0], -1)


def _q4_1_quantize(groups: torch.Tensor) -> dict[str, torch.Tensor]:
    mins = groups.amin(-1, keepdim=True).half()
    scales = ((groups.amax(-1, keepdim=True) - mins.float()) / 15).half()
    if not (torch.isfinite(mins).all() and torch.isfinite(scales).all()):
        raise ShardsError("weights exceed the float16 range of q4_1's scales; use int8 or nf4")
    q = _safe_divide(groups - mins.float(), scales.float()).round().clamp(0, 15)
    return {"qweight": _pack_nibbles(q), "scales": _flat(scales), "mins": _flat(mins)}


def _q4_1_dequantize(parts: dict[str, torch.Tensor], group_size: int) -> torch.Tensor:
    packed = parts["qweight"]
    q = torch.stack((packed >> 4, packed & 15), -1).view(packed.shape[0], -1, group_size).float()
    # q * d is exact in float32, so this equals GGUF's own dequantization bit for bit.
    w = q.mul_(parts["scales"].float().unsqueeze(-1)).add_(parts["mins"].float().unsqueeze(-1))
    return w.view(packed.shape[0], -1)


_QUANTIZE: dict[str, Callable[[torch.Tensor], dict[str, torch.Tensor]]] = {
    "int8": _int8_quantize, "nf4": _nf4_quantize, "q4_1": _q4_1_quantize}
_DEQUANTIZE: dict[str, Callable[[dict[str, torch.Tensor], int], torch.Tensor]] = {
    "int8": _int8_dequantize, "nf4": _nf4_dequantize, "q4_1": _q4_1_dequantize}
