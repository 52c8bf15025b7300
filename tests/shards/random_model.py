"""A tiny random-weights model built in memory (no store, no tokenizer) with a vocabulary small
enough that sampled token frequencies can be checked against exact distributions."""

from __future__ import annotations

import torch

from shards.blocks import BlockStack
from shards.config import ModelConfig
from shards.generation import GenerativeModel
from shards.head import Head
from shards.local import LocalRunner


class RandomModel(GenerativeModel):
    def __init__(self, vocab_size: int = 16, seed: int = 0, logit_scale: float = 2.0) -> None:
        config = ModelConfig(family="llama", hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                             num_kv_heads=1, head_dim=16, vocab_size=vocab_size, rms_norm_eps=1e-5,
                             rope_theta=10000.0, max_position_embeddings=64)
        self.stack, head = BlockStack(config, 0, config.num_layers), Head(config)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in [*self.stack.named_parameters(), *head.named_parameters()]:
                if p.dim() == 2:
                    scale = logit_scale if name.startswith("lm_head") else 1.0
                    p.copy_(torch.randn(p.shape, generator=g) * scale / p.shape[0] ** 0.5)
        super().__init__(head.eval(), None, config)

    def new_runner(self, max_length: int) -> LocalRunner:
        return LocalRunner(self.stack, max_length)

    @torch.inference_mode()
    def next_logits(self, sequences: torch.Tensor) -> torch.Tensor:
        """Logits after the last token of each row of `sequences` (batch, n), in one stateless pass."""
        return self.head.logits(self.stack(self.head.embed(sequences))[:, -1])
