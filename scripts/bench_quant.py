"""Quantized stores side by side: memory per block, local speed, agreement with float32, perplexity.

For float32 (the base store) and each derived scheme (int8, nf4, q4_1, quantized from it into a
temporary folder, computed in float32): bytes of one block in memory (shards.memory), local
greedy tokens/s (run alternately, best run), the share of positions over a fixed set of texts whose
greedy next token equals float32's, and perplexity on a short text. `--kernels` instead times one
block's four projections at batch-1 decode, batch-8 decode and a 64-token prefill for each CPU path
considered in shards/quant_linear.py.

    python scripts/bench_quant.py [--model smollm2-135m-instruct] [--tokens 32] [--repeats 3] [--kernels]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchlib import PROMPT, alternate, bench_parser
from shards.blocks import Projection
from shards.catalog import resolve_model
from shards.derive import quantize_store
from shards.generation import encode_prompt
from shards.local import LocalModel
from shards.manifest import SCHEMES, Quantization
from shards.memory import block_bytes
from shards.quant import quantize
from shards.quant_linear import QuantizedProjection
from shards.store import ShardStore

TEXTS = ["The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
         "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
         "In 1492 Columbus sailed across the Atlantic Ocean with three ships.",
         "To make a good cup of tea, first boil fresh water and warm the pot.",
         "The stock market fell sharply on Monday after the central bank raised interest rates.",
         "Python is a programming language that emphasizes readability and simplicity.",
         "Mount Everest is the highest mountain on Earth, located in the Himalayas.",
         "She opened the letter slowly, afraid of what it might say about her brother."]
PERPLEXITY_TEXT = ("The city of Rome was founded, according to legend, in 753 BC by Romulus. Over the following "
                   "centuries it grew from a small settlement on the Tiber into the capital of an empire that "
                   "stretched from Britain to Egypt. Its roads, laws and language shaped Europe for two thousand "
                   "years, and many of its buildings still stand today.")
KERNEL_INPUTS = {"batch-1 decode": (1, 1), "batch-8 decode": (8, 1), "64-token prefill": (1, 64)}


@torch.inference_mode()
def next_token_agreement(model: LocalModel, reference: LocalModel) -> float:
    same = total = 0
    for text in TEXTS:
        hidden = model.head.embed(torch.tensor([model.tokenizer(text)["input_ids"]]))
        ours = model.head.logits(model.stack(hidden)).argmax(-1)
        theirs = reference.head.logits(reference.stack(hidden)).argmax(-1)
        same += int((ours == theirs).sum())
        total += ours.numel()
    return same / total


@torch.inference_mode()
def perplexity(model: LocalModel) -> float:
    ids = torch.tensor([model.tokenizer(PERPLEXITY_TEXT)["input_ids"]])
    logits = model.head.logits(model.stack(model.head.embed(ids)))
    return math.exp(float(F.cross_entropy(logits[0, :-1], ids[0, 1:])))


def compare_stores(args: argparse.Namespace) -> None:
    base = ShardStore(resolve_model(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"float32": base}
        for scheme in SCHEMES:
            quantize_store(base, Path(tmp) / scheme, Quantization.of(scheme))
            stores[scheme] = ShardStore(Path(tmp) / scheme)
        models = {name: LocalModel.load(store) for name, store in stores.items()}
        ids = encode_prompt(models["float32"].tokenizer, PROMPT)
        runs = alternate({name: (lambda m=m: m.generate(ids, args.tokens, ignore_eos=True))
                          for name, m in models.items()}, args.repeats)
        # The least disturbed run, as for --kernels: on shared cores medians measure the neighbours.
        print(f"{args.tokens} new tokens, greedy, float32 compute, {torch.get_num_threads()} threads "
              f"(best of {args.repeats}); agreement over {len(TEXTS)} texts")
        print(f"{'scheme':<10}{'MiB/block':>10}{'tok/s':>8}{'agreement':>11}{'perplexity':>12}")
        for name, model in models.items():
            mib = block_bytes(stores[name].manifest) / 2**20
            tps = max(g.tokens_per_second for g in runs[name])
            print(f"{name:<10}{mib:>10.2f}{tps:>8.1f}"
                  f"{next_token_agreement(model, models['float32']):>11.1%}{perplexity(model):>12.2f}")


def kernel_contenders(shapes: list[tuple[int, int]]) -> dict[str, list[Callable[[torch.Tensor], torch.Tensor]]]:
    """For each path, one callable per projection shape (in, out); random weights of a realistic scale."""
    weights = [torch.randn(out_features, in_features) * 0.05 for in_features, out_features in shapes]

    def plain(w: torch.Tensor, dtype: torch.dtype) -> nn.Module:
        p = Projection(w.shape[1], w.shape[0], bias=False)
        p.weight_t = nn.Parameter(w.t().contiguous().to(dtype))
        return p

    def quantized(w: torch.Tensor, scheme: str, dtype: torch.dtype) -> nn.Module:
        q = Quantization.of(scheme)
        p = QuantizedProjection(w.shape[1], w.shape[0], False, q)
        for name, t in quantize(q, w).items():
            setattr(p, name, t)
        return p.to(dtype)

    def ao_dynamic(w: torch.Tensor) -> nn.Module:
        linear = nn.Linear(w.shape[1], w.shape[0], bias=False)
        linear.weight = nn.Parameter(w)
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)

    def int8pack(w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        scales = w.abs().amax(1) / 127
        codes = (w / scales[:, None]).round().to(torch.int8)
        return lambda x: torch._weight_int8pack_mm(x.reshape(-1, w.shape[1]), codes, scales)

    bf16 = [plain(w, torch.bfloat16) for w in weights]
    contenders: dict[str, list[Callable[[torch.Tensor], torch.Tensor]]] = {
        "float32 x @ W_t": [plain(w, torch.float32) for w in weights],
        "bfloat16 weights": [lambda x, p=p: p(x.bfloat16()) for p in bf16],
    }
    for scheme in SCHEMES:
        contenders[f"{scheme} dequantize, float32"] = [quantized(w, scheme, torch.float32) for w in weights]
    int8_bf16 = [quantized(w, "int8", torch.bfloat16) for w in weights]
    contenders["int8 dequantize, bfloat16"] = [lambda x, p=p: p(x.bfloat16()) for p in int8_bf16]
    contenders["torch.ao dynamic int8"] = [ao_dynamic(w) for w in weights]
    contenders["_weight_int8pack_mm"] = [int8pack(w) for w in weights]
    return contenders


@torch.inference_mode()
def compare_kernels(repeats: int) -> None:
    """One SmolLM2 block's projections (qkv, o, gate_up, down), summed; contenders alternate."""
    shapes = [(576, 960), (576, 576), (576, 3072), (1536, 576)]
    contenders = kernel_contenders(shapes)
    times: dict[tuple[str, str], list[float]] = {}
    for label, (batch, n) in KERNEL_INPUTS.items():
        xs = [torch.randn(batch, n, in_features) for in_features, _ in shapes]
        for _ in range(repeats):
            for name, projections in contenders.items():
                started = time.perf_counter()
                for p, x in zip(projections, xs):
                    p(x)
                times.setdefault((name, label), []).append(time.perf_counter() - started)
    # The least disturbed run: on cores shared with other work, medians mostly measure the neighbours.
    print(f"one block's projections, microseconds (best of {repeats}), {torch.get_num_threads()} threads")
    print(f"{'path':<28}" + "".join(f"{label:>18}" for label in KERNEL_INPUTS))
    for name in contenders:
        print(f"{name:<28}" + "".join(f"{min(times[(name, label)]) * 1e6:>18.0f}"
                                      for label in KERNEL_INPUTS))


def main() -> int:
    ap = bench_parser(__doc__, tokens=32, repeats=3)
    ap.add_argument("--kernels", action="store_true", help="time the CPU matmul paths instead")
    args = ap.parse_args()
    if args.kernels:
        compare_kernels(max(args.repeats, 30))
    else:
        compare_stores(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
