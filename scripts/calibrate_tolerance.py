"""How far apart do honest computations of one span land? The spot-check tolerances come from here.

For spans of 10 and 30 blocks, on random token sequences and on real chat prompts, measures the
relative L2 difference (per position) between: float32 cached decode vs float32 stateless forward
(what a float32 spot check sees, for a base store and for an int8 derived store), bfloat16 /
float16 vs float32, and each quantization scheme's derived store (computed in float32) vs its
float32 base. routing/evidence.tolerance() sets each bound a comfortable margin above the worst
case printed here.

Then the liars: a node announcing the int8 root that serves nf4, or skips its span (returns its
input), must land above the int8 root's bound at every position; the smallest error such a node
shows is printed, against the int8 weights (same root) and against the float32 base (cross-root).

    python scripts/calibrate_tolerance.py [--trials 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from routing.evidence import relative_error, tolerance
from shards.blocks import BlockStack
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.derive import quantize_store
from shards.generation import encode_prompt
from shards.local import LocalModel
from shards.manifest import SCHEMES, Quantization
from shards.store import ShardStore

PROMPTS = ["Tell me about the history of Rome in detail.", "What is the capital of France?",
           "Write a poem about the sea."]
LOW_PRECISION = (("bfloat16", torch.bfloat16), ("float16", torch.float16))


def per_position(out: torch.Tensor, reference: torch.Tensor) -> list[float]:
    return [relative_error(out[:, i], reference[:, i]) for i in range(reference.shape[1])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    model = LocalModel.load(resolve_model(args.model))
    store, n = model.store, model.store.manifest.num_blocks
    generator = torch.Generator().manual_seed(0)
    inputs = [model.head.embed(torch.randint(0, model.config.vocab_size, (1, 40), generator=generator))
              for _ in range(args.trials)]
    inputs += [model.head.embed(torch.tensor([encode_prompt(model.tokenizer, p)])) for p in PROMPTS]
    worst: dict[str, float] = {}
    bounds: dict[str, float] = {}
    least: dict[str, float] = {}

    def record(key: str, errors: list[float], bound: float) -> None:
        worst[key] = max(worst.get(key, 0.0), *errors)
        bounds[key] = bound

    def record_liar(key: str, errors: list[float], bound: float) -> None:
        least[key] = min(least.get(key, float("inf")), *errors)
        bounds[key] = bound

    def check_decode(key: str, stack: BlockStack, h: torch.Tensor, full: torch.Tensor) -> None:
        cache = stack.new_cache(1, h.shape[1])
        stack(h[:, :-1], cache, 0)
        record(key, [relative_error(stack(h[:, -1:], cache, h.shape[1] - 1), full[:, -1:])],
               tolerance("float32", "float32"))

    with tempfile.TemporaryDirectory() as tmp:
        for s in SCHEMES:
            quantize_store(store, Path(tmp) / s, Quantization.of(s))
        derived = {s: ShardStore(Path(tmp) / s) for s in SCHEMES}
        for length in (10, n):
            f32 = model.stack.narrow(0, length)
            low = {name: store.load_blocks(0, length, dtype=dtype) for name, dtype in LOW_PRECISION}
            quantized = {s: d.load_blocks(0, length) for s, d in derived.items()}
            with torch.inference_mode():
                for h in inputs:
                    full = f32(h)
                    check_decode(f"float32 cached vs stateless, {length} blocks", f32, h, full)
                    for name, stack in low.items():
                        record(f"{name} vs float32, {length} blocks", per_position(stack(h.to(stack.dtype)), full),
                               tolerance(name, "float32"))
                    outputs = {s: stack(h) for s, stack in quantized.items()}
                    check_decode(f"int8 root cached vs stateless, {length} blocks", quantized["int8"], h,
                                 outputs["int8"])
                    for s, out in outputs.items():
                        record(f"{s} vs float32 base, {length} blocks", per_position(out, full),
                               tolerance("float32", "float32", s, None))
                    for lie, out in (("nf4 served", outputs["nf4"]), ("span skipped", h)):
                        record_liar(f"{lie} for int8 root, {length} blocks", per_position(out, outputs["int8"]),
                                    tolerance("float32", "float32", "int8", "int8"))
                        record_liar(f"{lie} for int8, vs base, {length} blocks", per_position(out, full),
                                    tolerance("float32", "float32", "int8", None))
    for key, value in worst.items():
        bound = bounds[key]
        print(f"{key:<44} worst {value:.2e}   tolerance {bound:.0e}   margin {bound / max(value, 1e-12):6.1f}x")
    for key, value in least.items():
        bound = bounds[key]
        print(f"{key:<44} least {value:.2e}   tolerance {bound:.0e}   caught by {value / bound:8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
