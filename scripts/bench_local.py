"""Local generation speed: our block stack vs transformers' `generate`, side by side in one run.

Both run the same model (float32, CPU), the same chat prompt, greedy, the same number of new
tokens; the reference is transformers' own GGUF loading, so nothing of ours is in its path.

    python scripts/bench_local.py [--model smollm2-135m-instruct] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shards.catalog import resolve_model  # noqa: E402
from shards.generation import encode_prompt  # noqa: E402
from shards.local import LocalModel  # noqa: E402
from shards.reference import load_reference, pulled_source  # noqa: E402

PROMPT = "Write a long story about a dragon who learns to cook."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", default=PROMPT)
    args = ap.parse_args()

    ours = LocalModel.load(resolve_model(args.model))
    ids = encode_prompt(ours.tokenizer, args.prompt)
    ref = load_reference(pulled_source(ours.store))
    ours_tps, ref_tps = [], []
    for r in range(args.repeats):
        g = ours.generate(ids, args.tokens)
        ours_tps.append(len(g.token_ids) / g.total_time)
        with torch.inference_mode():
            t = time.perf_counter()
            out = ref.generate(torch.tensor([ids]), max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                               do_sample=False)
            elapsed = time.perf_counter() - t
        ref_tps.append((out.shape[1] - len(ids)) / elapsed)
        print(f"run {r + 1}: ours {ours_tps[-1]:.1f} tok/s ({len(g.token_ids)} tokens), "
              f"transformers {ref_tps[-1]:.1f} tok/s", flush=True)
    o, t = statistics.median(ours_tps), statistics.median(ref_tps)
    print(f"\nprompt {len(ids)} tokens, {args.tokens} new tokens, float32, {torch.get_num_threads()} threads")
    print(f"ours (swarmlm local)      {o:7.1f} tok/s")
    print(f"transformers generate     {t:7.1f} tok/s")
    print(f"ratio ours/transformers   {o / t:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
