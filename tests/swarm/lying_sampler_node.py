"""A test-only node that closes rings dishonestly: it computes its blocks honestly, but samples the
token its head likes least. Usage: the arguments of `python -m node`, e.g. `run ... --ring`."""

from __future__ import annotations

import sys

import torch

from node.ring import RingHead


def _least_likely(self: RingHead, row: torch.Tensor, sampler) -> int:  # noqa: ANN001
    with torch.inference_mode():
        return int(self.head.logits(row.to(self.device))[0].argmin())


RingHead._choose = _least_likely  # type: ignore[method-assign]

if __name__ == "__main__":
    from node.cli import main

    sys.exit(main(sys.argv[1:]))
