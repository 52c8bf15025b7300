"""A model no node can hold: a deterministic synthetic Llama, packed straight into a store in bounded memory.

Random weights from a seed, generated block by block while the store is written (never held whole,
never committed), in the Llama architecture our blocks serve: GQA, RoPE, SwiGLU, tied embeddings.
The tokenizer is the default model's (vocabulary 49152), so text goes in and out. Presets:
`1b` (hidden 2048, 22 layers, intermediate 5632, 32 heads, 4 KV heads: 1.07 billion parameters,
4.3 GB in float32), `mid` (about 210 million, for tests), `tiny`, and `thin` (48 blocks of hidden 64: many
small nodes on one machine, scripts/scale_test.py); `8b` has Llama-3-8B's block
shapes (hidden 4096, 32 layers, intermediate 14336, 32 heads, 8 KV heads) for GPU benchmarks, whose
`random_stack` builds its blocks straight on the device (scripts/gpu_check.py).

Scaled so activations stay finite over every layer in float32: the projections that read a
normalized input (q, k, v, gate, up) have unit gain (std 1/sqrt(fan_in)); those that write into the
residual stream (o, down) are further scaled by 1/sqrt(2 * layers), so the stream grows like a sum
of unit terms, not a product; embeddings have std 0.02 (logits of std about 1).

Memory: a pack holds one shard's tensors and their serialised copy, so its peak RSS stays under
the RSS before packing plus 3x the largest shard (the head: embeddings), whatever the model size.

    python scripts/synthetic_model.py --out DIR [--preset 1b] [--seed 0] [--check] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from shards.blocks import Block, BlockStack, to_module_layout
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.config import ModelConfig
from shards.derive import quantize_block
from shards.manifest import FileEntry, Quantization
from shards.pack import Source, pack_source
from shards.quant_linear import projection_factory, quantized_module_layout
from shards.store import ShardStore

PRESETS: dict[str, dict[str, int]] = {
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_layers=22, num_heads=32, num_kv_heads=4),
    "mid": dict(hidden_size=768, intermediate_size=3072, num_layers=20, num_heads=12, num_kv_heads=4),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=2),
    "thin": dict(hidden_size=64, intermediate_size=128, num_layers=48, num_heads=4, num_kv_heads=2),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8),
}
HEAD_STREAM = 1 << 16  # generator stream of the head; blocks use streams 0..layers-1


def preset_config(preset: str, vocab_size: int = 49152, **extra: Any) -> ModelConfig:
    """The synthetic Llama config of `preset` (the vocabulary is the tokenizer's when packed)."""
    shape = PRESETS[preset]
    return ModelConfig(family="llama", head_dim=shape["hidden_size"] // shape["num_heads"], vocab_size=vocab_size,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                       max_position_embeddings=2048, **shape, **extra)


def normal_stream(seed: int, stream: int, device: torch.device | str = "cpu"
                  ) -> Callable[[int, int, float], torch.Tensor]:
    """Draws (rows, cols) with a given std from generator stream `stream` of this seed, on `device`
    (a device's generator draws other numbers than the CPU's: only CPU draws make the packed model)."""
    g = torch.Generator(device=device).manual_seed(seed * (HEAD_STREAM + 1) + stream)
    return lambda rows, cols, std: torch.randn(rows, cols, generator=g, device=device).mul_(std)


def block_tensors(c: ModelConfig, seed: int, i: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Block `i`'s tensors (Hugging Face names and layout) from its own stream, scaled as the module says."""
    q_out, kv_out = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    residual = 1 / math.sqrt(2 * c.num_layers)
    normal = normal_stream(seed, i, device)
    return {
        "input_layernorm.weight": torch.ones(c.hidden_size, device=device),
        "post_attention_layernorm.weight": torch.ones(c.hidden_size, device=device),
        "self_attn.q_proj.weight": normal(q_out, c.hidden_size, c.hidden_size ** -0.5),
        "self_attn.k_proj.weight": normal(kv_out, c.hidden_size, c.hidden_size ** -0.5),
        "self_attn.v_proj.weight": normal(kv_out, c.hidden_size, c.hidden_size ** -0.5),
        "self_attn.o_proj.weight": normal(c.hidden_size, q_out, q_out ** -0.5 * residual),
        "mlp.gate_proj.weight": normal(c.intermediate_size, c.hidden_size, c.hidden_size ** -0.5),
        "mlp.up_proj.weight": normal(c.intermediate_size, c.hidden_size, c.hidden_size ** -0.5),
        "mlp.down_proj.weight": normal(c.hidden_size, c.intermediate_size, c.intermediate_size ** -0.5 * residual),
    }


@torch.inference_mode()
def random_stack(preset: str, device: torch.device | str, dtype: torch.dtype, *, layers: int | None = None,
                 seed: int = 0, quantization: Quantization | None = None) -> BlockStack:
    """The first `layers` blocks of `preset` drawn on `device`, no store or tokenizer needed: shapes no
    store here holds, for benchmarks. Each block is cast (or quantized) as it is drawn, so the float32
    draws of only one block are alive at a time. With `quantization`, its derived blocks computing in `dtype`."""
    config = preset_config(preset)
    layers = layers or config.num_layers
    with torch.device("meta"):
        stack = BlockStack(config, 0, layers, [Block(config, projection_factory(quantization)) for _ in range(layers)])
    state: dict[str, torch.Tensor] = {}
    for i in range(layers):
        tensors = block_tensors(config, seed, i, device)
        if quantization is None:
            layout = {k: v.to(dtype) for k, v in to_module_layout(tensors).items()}
        else:
            layout = quantized_module_layout(quantize_block(tensors, quantization), quantization)
        state.update({f"blocks.{i}.{k}": v for k, v in layout.items()})
    stack.load_state_dict(state, strict=True, assign=True)
    return stack.to(device=device, dtype=dtype).eval().requires_grad_(False)


class SyntheticSource(Source):
    """Weights drawn from `seed`, one independent generator per block, so each block comes out alone."""

    def __init__(self, preset: str, seed: int, tokenizer_store: ShardStore) -> None:
        t = tokenizer_store.config
        self.config = preset_config(preset, vocab_size=t.vocab_size, bos_token_id=t.bos_token_id,
                                    eos_token_ids=t.eos_token_ids)
        self.dtypes = {torch.float32}
        self.preset, self.seed, self.tokenizer_store = preset, seed, tokenizer_store

    def blocks(self) -> Iterator[dict[str, torch.Tensor]]:
        return (block_tensors(self.config, self.seed, i) for i in range(self.config.num_layers))

    def head(self) -> dict[str, torch.Tensor]:
        c = self.config
        return {"embed_tokens.weight": normal_stream(self.seed, HEAD_STREAM)(c.vocab_size, c.hidden_size, 0.02),
                "norm.weight": torch.ones(c.hidden_size)}

    def save_tokenizer(self, out: Path) -> tuple[FileEntry, ...]:
        files = self.tokenizer_store.manifest.tokenizer
        for f in files:
            self.tokenizer_store.copy_file(f.file, f.sha256, f"tokenizer:{f.file}", out.parent)
        return files

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic", "preset": self.preset, "seed": self.seed,
                "generator": "scripts/synthetic_model.py"}


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@torch.inference_mode()
def check_forward(store: ShardStore, text: str) -> list[float]:
    """Hidden-state RMS after each block for `text`, loading one block at a time (bounded memory)."""
    head = store.load_head()
    hidden = head.embed(torch.tensor([store.tokenizer()(text)["input_ids"]]))
    rms = []
    for i in range(store.manifest.num_blocks):
        hidden = store.load_blocks(i, i + 1)(hidden)
        rms.append(float(hidden.pow(2).mean().sqrt()))
    logits = head.logits(hidden)
    if not (torch.isfinite(hidden).all() and torch.isfinite(logits).all()):
        raise SystemExit(f"non-finite activations: RMS per block {rms}")
    return rms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="store folder to create (never inside the repository)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="1b")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="then run a forward through every block, one at a time")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    source = SyntheticSource(args.preset, args.seed, ShardStore(resolve_model(DEFAULT_MODEL)))
    before = peak_rss()
    manifest = pack_source(source, args.out, name=f"synthetic-{args.preset}-seed{args.seed}")
    peak = peak_rss()
    c = manifest.config
    params = c.num_layers * (2 * c.hidden_size * c.head_dim * (c.num_heads + c.num_kv_heads)
                             + 3 * c.hidden_size * c.intermediate_size) + c.vocab_size * c.hidden_size
    largest = max(s.size for s in manifest.shards)
    result = {"root": manifest.root, "parameters": params, "store_bytes": manifest.total_size,
              "largest_shard_bytes": largest, "rss_before_bytes": before, "peak_rss_bytes": peak,
              "bound_bytes": before + 3 * largest}
    if args.check:
        result["hidden_rms_per_block"] = check_forward(ShardStore(args.out), "The capital of France is")
    if args.json:
        print(json.dumps(result))
        return 0
    gib = 2**30
    print(f"{args.out}: {params / 1e9:.2f} billion parameters, {manifest.total_size / gib:.2f} GiB, "
          f"root {manifest.root}")
    print(f"peak RSS {peak / gib:.2f} GiB (before packing {before / gib:.2f} GiB; bound: that + 3 x largest shard "
          f"{largest / gib:.2f} GiB = {result['bound_bytes'] / gib:.2f} GiB)")
    if args.check:
        print("hidden RMS after each block: " + " ".join(f"{r:.2f}" for r in result["hidden_rms_per_block"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
