"""Spot checks against honest nodes in every precision the swarm allows: how close each comes to a conviction.

For each compute dtype, dtype the output travels in, and quantization scheme, an honest node's
span output is computed exactly as a node computes it (its weights, its dtype, its input in its
dtype, its output converted for the next node) and judged the way a client judges a spot check and
a third party judges published evidence: against a float32 computation of the same weights, within
`Claim.bound()`. The margin is the honest error as a share of that bound (a conviction at > 1).
Two liars are judged in every combination too: one whose weights are 5% off in one block (caught
where everything is float32) and one serving grossly wrong weights (caught everywhere).

    python scripts/false_accusation_sweep.py            # every combination, three spans, four prompts
    python scripts/false_accusation_sweep.py --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.keys import Identity  # noqa: E402
from routing import wire  # noqa: E402
from routing.attestation import attest  # noqa: E402
from routing.evidence import Claim, relative_error  # noqa: E402
from shards.blocks import BlockStack  # noqa: E402
from shards.catalog import resolve_model  # noqa: E402
from shards.derive import derived_store  # noqa: E402
from shards.manifest import Quantization  # noqa: E402
from shards.store import ShardStore  # noqa: E402

DTYPES = ("float32", "bfloat16", "float16")
SCHEMES = (None, "int8", "nf4", "q4_1")
PROMPTS = ("What is the capital of France?",
           "Write a short poem about the sea, with rhymes.",
           "def fibonacci(n):\n    if n < 2:\n        return n\n",
           "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24")
# What a liar does to its span: scale the MLP output of its middle block (weights 5% off), or flip
# the sign of every block's (weights that are not the model's at all, yet finite in any dtype).
LIARS = {"subtle": (1.05, "middle"), "gross": (-1.0, "every")}


@dataclass(frozen=True)
class Row:
    compute: str
    travel: str
    scheme: str
    blocks: tuple[int, int]
    bound: float
    honest_error: float
    liar_errors: dict[str, float]

    @property
    def margin(self) -> float:
        """The honest error as a share of its bound: a false accusation at > 1."""
        return self.honest_error / self.bound

    def convicted(self, liar: str) -> bool:
        return self.liar_errors[liar] > self.bound


def _lie(stack: BlockStack, liar: str) -> Callable[[], None]:
    """Make `stack` compute like `liar`; returns what undoes it."""
    factor, where = LIARS[liar]
    blocks = stack.blocks if where == "every" else [stack.blocks[len(stack.blocks) // 2]]
    hooks = [b.mlp.register_forward_hook(lambda _m, _i, out: out * factor) for b in blocks]
    return lambda: [h.remove() for h in hooks]


def _claim(identity: Identity, out: torch.Tensor, sent: torch.Tensor, root: str, blocks: tuple[int, int],
           compute: str, scheme: str | None, start: int) -> Claim:
    att = attest(identity, session="sweep", step=1, start=start, manifest_root=bytes.fromhex(root), blocks=blocks,
                 dtype=compute, input_digest=wire.tensor_digest(sent), output_digest=wire.tensor_digest(out),
                 travel_dtype=wire.dtype_name(out.dtype), scheme=scheme)
    return Claim(att, out)


def span_inputs(base: ShardStore, spans: list[tuple[int, int]], prompts: tuple[str, ...]
                ) -> dict[tuple[int, int], list[torch.Tensor]]:
    """The float32 hidden states entering each span, per prompt, as an honest chain produces them."""
    head, tokenizer = base.load_head(dtype=torch.float32), base.tokenizer()
    hidden = [head.embed(torch.tensor([tokenizer.encode(p)])) for p in prompts]
    inputs: dict[tuple[int, int], list[torch.Tensor]] = {}
    for span in spans:
        inputs[span] = hidden
        stack = base.load_blocks(*span, dtype=torch.float32)
        with torch.inference_mode():
            hidden = [stack(h) for h in hidden]
    return inputs


def sweep(base: ShardStore, spans: list[tuple[int, int]], prompts: tuple[str, ...] = PROMPTS,
          dtypes: tuple[str, ...] = DTYPES, schemes: tuple[str | None, ...] = SCHEMES,
          last: int = 4) -> Iterator[Row]:
    """One row per (scheme, compute, travel, span): the worst honest error over the prompts and the
    smallest error of each liar, each judged as a client and `check-evidence` judge them."""
    identity, inputs = Identity.generate(), span_inputs(base, spans, prompts)
    for scheme, span in itertools.product(schemes, spans):
        store = base if scheme is None else derived_store(base, Quantization.of(scheme))
        reference = store.load_blocks(*span, dtype=torch.float32)
        for compute in dtypes:
            stack = store.load_blocks(*span, dtype=wire.WIRE_DTYPES[compute])
            # The span's outputs do not depend on the dtype they travel in: compute them once per prompt.
            runs = []
            for x in inputs[span]:
                sent = x.to(wire.WIRE_DTYPES[compute])  # what the previous hop sent: the node's own dtype
                start = x.shape[1] - last
                with torch.inference_mode():
                    truth, out = reference(sent.float())[:, start:], stack(sent)[:, start:]
                    lied = {}
                    for liar in LIARS:
                        undo = _lie(stack, liar)
                        lied[liar] = stack(sent)[:, start:]
                        undo()
                runs.append((sent, start, truth, out, lied))
            for travel in dtypes:
                honest, liars, bound = 0.0, {liar: float("inf") for liar in LIARS}, 0.0
                to = wire.WIRE_DTYPES[travel]
                for sent, start, truth, out, lied in runs:
                    with torch.inference_mode():
                        claim = _claim(identity, out.to(to), sent, store.root, span, compute, scheme, start)
                        bound = claim.bound()
                        honest = max(honest, relative_error(claim.output, truth))
                        for liar in LIARS:
                            liars[liar] = min(liars[liar], relative_error(lied[liar].to(to), truth))
                yield Row(compute, travel, scheme or "-", span, bound, honest, liars)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name or packed store path")
    p.add_argument("--spans", type=int, default=3, help="split the model into this many spans (default 3)")
    p.add_argument("--json", type=Path, help="also write every row here")
    args = p.parse_args(argv)
    base = ShardStore(resolve_model(args.model))
    n = base.manifest.num_blocks
    spans = [(i * n // args.spans, (i + 1) * n // args.spans) for i in range(args.spans)]
    print(f"{'scheme':>6} {'compute':>8} {'travel':>8} {'blocks':>7} {'bound':>7} {'honest':>9} {'margin':>7} "
          f"{'subtle liar':>12} {'gross liar':>11}", flush=True)
    rows, false = [], 0
    for r in sweep(base, spans):
        rows.append(r)
        false += r.margin > 1
        caught = {liar: f"{r.liar_errors[liar]:.2e}{'*' if r.convicted(liar) else ' '}" for liar in LIARS}
        print(f"{r.scheme:>6} {r.compute:>8} {r.travel:>8} {r.blocks[0]:>3}:{r.blocks[1]:<3} {r.bound:>7.0e} "
              f"{r.honest_error:>9.2e} {r.margin:>7.3f} {caught['subtle']:>12} {caught['gross']:>11}", flush=True)
    gross_missed = sum(not r.convicted("gross") for r in rows)
    print(f"\n{len(rows)} combinations: {false} honest node(s) convicted (worst margin "
          f"{max(r.margin for r in rows):.3f}); the gross liar escaped in {gross_missed}, the subtle liar was "
          f"convicted in {sum(r.convicted('subtle') for r in rows)} (* = convicted)")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "margin": r.margin} for r in rows], indent=1))
    return 1 if false or gross_missed else 0


if __name__ == "__main__":
    sys.exit(main())
