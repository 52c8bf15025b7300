"""A test-only dishonest node: serves weights 5% off in one block while announcing the honest root.

It loads and verifies the genuine shards (so its manifest root and load entry look honest), then
scales one block's MLP output projection. With SWARMLM_TEST_LIE=gross it flips the sign of every
block's instead: weights that are not the model's at all, which spot checks catch in any dtype. Usage: the
arguments of `python -m node`, e.g. `run ...`.
"""

from __future__ import annotations

import os
import sys

import torch

from shards.store import ShardStore

_genuine_load = ShardStore.load_blocks


def _perturbed_load(self: ShardStore, *args, **kwargs):  # noqa: ANN001, ANN202
    stack = _genuine_load(self, *args, **kwargs)
    gross = os.environ.get("SWARMLM_TEST_LIE") == "gross"
    with torch.no_grad():
        for block in stack.blocks if gross else [stack.blocks[len(stack.blocks) // 2]]:
            block.mlp.down_proj.weight_t.mul_(-1.0 if gross else 1.05)
    return stack


ShardStore.load_blocks = _perturbed_load  # type: ignore[method-assign]

if __name__ == "__main__":
    from node.cli import main

    sys.exit(main(sys.argv[1:]))
