"""Choosing the next token from logits: greedy at temperature 0, else temperature/top-k/top-p sampling.

`Sampler.probs` is the one definition of the distribution a token is drawn from; speculative
decoding (shards.speculative) judges drafts against exactly that distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ShardsError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ShardsError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ShardsError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ShardsError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sampler:
    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def __call__(self, logits: torch.Tensor) -> int:
        """Next token id for one position's float logits (vocab,)."""
        if self.params.greedy:
            return int(logits.argmax())
        return int(torch.multinomial(self.probs(logits), 1, generator=self.generator))

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The float32 CPU distribution over the vocabulary that `__call__` samples from, per row of
        logits (…, vocab); at temperature 0 it is one-hot at the argmax."""
        p = self.params
        if p.greedy:
            return torch.zeros_like(logits, dtype=torch.float32, device="cpu").scatter_(
                -1, logits.argmax(-1, keepdim=True).cpu(), 1.0)
        scores = logits.float().cpu() / p.temperature
        if p.top_k:
            kth = torch.topk(scores, min(p.top_k, scores.shape[-1])).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if p.top_p < 1:
            sorted_scores, order = scores.sort(descending=True)
            cumulative = sorted_scores.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_scores.softmax(-1) >= p.top_p  # keep the token that crosses top_p
            scores = scores.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
        return scores.softmax(-1)
