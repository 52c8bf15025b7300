"""How far apart do honest computations of one span land? The spot-check tolerances come from here.

For spans of 10 and 30 blocks, on random token sequences and on a real chat prompt, measures the
relative L2 difference (per position) between: float32 cached decode vs float32 stateless forward
(what a float32 spot check sees), and bfloat16 / float16 vs float32. routing/evidence.tolerance()
sets each bound a comfortable margin above the worst case printed here.

    python scripts/calibrate_tolerance.py [--trials 20]
"""

from __future__ import annotations

import argparse

import torch

from routing.evidence import relative_error, tolerance
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.generation import encode_prompt
from shards.local import LocalModel

PROMPTS = ["Tell me about the history of Rome in detail.", "What is the capital of France?",
           "Write a poem about the sea."]


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
    for length in (10, n):
        f32 = model.stack.narrow(0, length)
        low = {name: store.load_blocks(0, length, dtype=dtype)
               for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16))}
        with torch.inference_mode():
            for h in inputs:
                full = f32(h)
                cache = f32.new_cache(1, h.shape[1])
                f32(h[:, :-1], cache, 0)
                last = f32(h[:, -1:], cache, h.shape[1] - 1)
                key = f"float32 cached vs stateless, {length} blocks"
                worst[key] = max(worst.get(key, 0.0), relative_error(last, full[:, -1:]))
                for name, stack in low.items():
                    out = stack(h.to(stack.blocks[0].self_attn.o_proj.weight_t.dtype))
                    key = f"{name} vs float32, {length} blocks"
                    per_position = max(relative_error(out[:, i], full[:, i]) for i in range(h.shape[1]))
                    worst[key] = max(worst.get(key, 0.0), per_position)
    for key, value in worst.items():
        dtype = key.split()[0]
        bound = tolerance(dtype if dtype != "float32" else "float32", "float32")
        print(f"{key:<42} worst {value:.2e}   tolerance {bound:.0e}   margin {bound / max(value, 1e-12):6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
