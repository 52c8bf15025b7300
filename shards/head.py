"""The head shard: token embeddings in, final norm and LM head out. The client holds it."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Projection, RMSNorm
from .config import ModelConfig


class Head(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Left uninitialized, as Projection's weight is (a head is built on the meta device and loaded):
        # nn.Embedding's own random init there imports torch._dynamo, 2-4 CPU-s in every process that
        # builds a head (ring nodes, gateways, clients).
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # Tied models get a transposed copy of the embeddings: the fast layout costs memory, not time.
        self.lm_head = Projection(config.hidden_size, config.vocab_size, bias=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits for `hidden` (…, hidden_size), whatever dtype it arrives in."""
        return self.lm_head(self.norm(hidden.to(self.embed_tokens.weight.dtype))).float()
