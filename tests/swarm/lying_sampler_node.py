"""A test-only node that closes rings dishonestly: it computes its blocks honestly, but lies about what
its head chooses. By default it samples the token its head likes least; with SWARMLM_TEST_RING_LIE=keeps-drafts
it samples honestly but keeps every draft of a speculating ring step, rejected or not. Usage: the
arguments of `python -m node`, e.g. `run ... --ring` (the mode travels in the environment, so that the
fork server can run the script: node/forkserver.py)."""

from __future__ import annotations

import os
import sys

import torch

from node.ring import RingHead


def _least_likely(self: RingHead, rows: torch.Tensor, drafts: list[int], sampler) -> list[int]:  # noqa: ANN001
    with torch.inference_mode():
        return [int(self.head.logits(rows[:1].to(self.device))[0].argmin())]


def _keeps_every_draft(self: RingHead, rows: torch.Tensor, drafts: list[int], sampler) -> list[int]:  # noqa: ANN001
    with torch.inference_mode():
        return [*drafts, int(self.head.logits(rows[-1:].to(self.device))[0].argmax())]


if __name__ == "__main__":
    keeps = os.environ.get("SWARMLM_TEST_RING_LIE") == "keeps-drafts"
    RingHead._choose = _keeps_every_draft if keeps else _least_likely  # type: ignore[method-assign]
    from node.cli import main

    sys.exit(main(sys.argv[1:]))
