"""Local generation speed: our block stack vs transformers' `generate`, side by side in one run.

Both run the same model (float32, CPU), the same chat prompt, greedy, exactly the same number of
new tokens; the reference is transformers' own GGUF loading, so nothing of ours is in its path.

    python scripts/bench_local.py [--model smollm2-135m-instruct] [--tokens 64] [--repeats 5]
"""

from __future__ import annotations

import time

import torch

from benchlib import PROMPT, alternate, bench_parser, median_tps
from shards.catalog import resolve_model
from shards.generation import Generation, encode_prompt
from shards.local import LocalModel
from shards.reference import load_reference, pulled_source

def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--prompt", default=PROMPT)
    args = ap.parse_args()

    ours = LocalModel.load(resolve_model(args.model))
    ids = encode_prompt(ours.tokenizer, args.prompt)
    reference = load_reference(pulled_source(ours.store))

    def transformers_generate() -> Generation:
        with torch.inference_mode():
            started = time.perf_counter()
            out = reference.generate(torch.tensor([ids]), max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                     do_sample=False)
            total = time.perf_counter() - started
        return Generation("", out[0, len(ids):].tolist(), "length", len(ids), total_time=total)

    runs = alternate({"ours": lambda: ours.generate(ids, args.tokens, ignore_eos=True),
                      "transformers": transformers_generate}, args.repeats)
    o, t = median_tps(runs["ours"]), median_tps(runs["transformers"])
    print(f"prompt {len(ids)} tokens, {args.tokens} new tokens, greedy, float32, {torch.get_num_threads()} threads "
          f"(medians of {args.repeats})")
    print(f"ours (swarmlm local)     {o:6.1f} tok/s")
    print(f"transformers generate    {t:6.1f} tok/s")
    print(f"ratio ours/transformers  {o / t:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
