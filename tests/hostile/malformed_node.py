"""A test-only hostile node: serves honestly but answers every step with a malformed hidden-state tensor.

Usage: `malformed_node.py MODE swarmlm-arguments…`, MODE one of
- `nan`: the reply's float32 values are all NaN;
- `short`: the reply claims one more position than its bytes hold;
- `huge`: the reply claims 8 × 2048 positions (about 38 MB) and sends a few bytes;
- `dtype`: the reply claims float64.
Its record, load entry and attestations are honest; only the tensors it sends are not.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from routing import wire

_genuine = wire.encode_tensor


def _malformed(mode: str) -> Any:
    def encode(t: torch.Tensor) -> dict[str, Any]:
        obj = _genuine(t)
        batch, tokens, hidden = obj["shape"]
        if mode == "nan":
            return {**obj, "data": b"\xff" * len(obj["data"])}
        if mode == "short":
            return {**obj, "shape": [batch, tokens + 1, hidden]}
        if mode == "huge":
            return {**obj, "shape": [8, 2048, hidden]}
        return {**obj, "dtype": "float64"}

    return encode


if __name__ == "__main__":
    wire.encode_tensor = _malformed(sys.argv[1])  # type: ignore[assignment]
    from swarmlm.cli import main

    sys.exit(main(sys.argv[2:]))
