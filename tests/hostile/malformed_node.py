"""A test-only hostile node: serves honestly but answers every step with a malformed hidden-state tensor.

Usage: `SWARMLM_TEST_MALFORMED=MODE malformed_node.py node-arguments…` (those of `python -m node`: the
mode travels in the environment, so the node is forked like an honest one, not exec'd), MODE one of
- `nan`: the reply's float32 values are all NaN;
- `short`: the reply claims one more position than its bytes hold;
- `huge`: the reply claims 8 × 2048 positions (about 38 MB) and sends a few bytes;
- `dtype`: the reply claims float64;
- `attestation`: the tensor is right, but its signed attestation names another output digest; and
  after a push its copy to the client is late, so when the client meets it in a pushed step, the
  successor has computed the push before the client re-routes around this node (the result the
  successor sent before "routed" must be counted, not blamed; tests/routing/test_span_stale.py
  pins that path down in process).
Its record and load entry are honest; only what it sends with each step is not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
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


def _misattest(*args: Any, **kwargs: Any) -> Any:
    return dataclasses.replace(_genuine_attest(*args, **kwargs), output_digest=bytes(32))


async def _late_after_push(self: Any, frame: dict[str, Any]) -> None:
    if frame.get("type") == "result" and frame.get("pushed"):
        await asyncio.sleep(1.0)
    await _genuine_send(self, frame)


if __name__ == "__main__":
    mode = os.environ["SWARMLM_TEST_MALFORMED"]
    if mode == "attestation":
        import node.serving

        _genuine_attest = node.serving.attest
        node.serving.attest = _misattest  # type: ignore[assignment]
        import node.sessions

        _genuine_send = node.sessions.NodeSession.send
        node.sessions.NodeSession.send = _late_after_push  # type: ignore[method-assign]
    else:
        wire.encode_tensor = _malformed(mode)  # type: ignore[assignment]
    from node.cli import main

    sys.exit(main(sys.argv[1:]))
