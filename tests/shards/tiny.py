"""Randomly initialised tiny Hugging Face models, saved as real folders, for architecture variants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

BASE: dict[str, Any] = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                            rms_norm_eps=1e-5, tie_word_embeddings=False)

VARIANTS: dict[str, dict[str, Any]] = {
    "llama-mha": dict(model_type="llama"),
    "llama-gqa-tied": dict(model_type="llama", num_key_value_heads=2, tie_word_embeddings=True),
    "llama-bias": dict(model_type="llama", attention_bias=True, num_key_value_heads=2),
    "llama3-rope-scaling": dict(model_type="llama", num_key_value_heads=2, rope_theta=500000.0,
                                rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                  high_freq_factor=4.0, original_max_position_embeddings=32)),
    "qwen2-qkv-bias": dict(model_type="qwen2", num_key_value_heads=2),
    "mistral": dict(model_type="mistral", num_key_value_heads=2, sliding_window=None),
}


def make_tiny_model(variant: str, out: Path, seed: int = 0) -> Path:
    """Save a random model of `variant` (config.json + model.safetensors) into `out`; return `out`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = {**BASE, **VARIANTS[variant]}
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(model_type, **spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # biases start at zero; make them matter
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    model.save_pretrained(out, safe_serialization=True)
    return out
