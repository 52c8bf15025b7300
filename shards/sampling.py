"""Choosing the next token from logits: greedy at temperature 0, else temperature/top-k/top-p/min-p
sampling, after any repetition, presence and frequency penalties (shards.logits_processing).

`Sampler.probs` is the one definition of the distribution a token is drawn from; speculative
decoding (shards.speculative) judges drafts against exactly that distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import ShardsError
from .logits_processing import (min_p_filter, presence_frequency_penalty, repetition_penalty, top_k_filter,
                                top_p_filter)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ShardsError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ShardsError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ShardsError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            raise ShardsError(f"min_p must be in [0, 1], got {self.min_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ShardsError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if self.repetition_penalty <= 0:
            raise ShardsError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        """Whether a token's scores depend on the tokens before it."""
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0


class Sampler:
    """Draws tokens for one answer. `prompt_length` splits a context into the prompt and the answer
    so far: the repetition penalty counts both, presence and frequency only the answer."""

    def __init__(self, params: SamplingParams, prompt_length: int = 0) -> None:
        self.params, self.prompt_length = params, prompt_length
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def __call__(self, logits: torch.Tensor, context: Sequence[int] = ()) -> int:
        """Next token id for one position's logits (vocab,) after `context` (prompt and answer so far)."""
        if self.params.greedy:
            return int(self.penalize(logits, context).argmax())
        return int(torch.multinomial(self.probs(logits, [context]), 1, generator=self.generator))

    def penalize(self, logits: torch.Tensor, context: Sequence[int]) -> torch.Tensor:
        """One row of float CPU logits after the penalties for what `context` holds."""
        p, scores = self.params, logits.float().cpu()
        if not p.penalized:
            return scores
        scores = repetition_penalty(scores, context, p.repetition_penalty)
        return presence_frequency_penalty(scores, context[self.prompt_length:], p.presence_penalty,
                                          p.frequency_penalty)

    def probs(self, logits: torch.Tensor, contexts: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """The float32 CPU distribution over the vocabulary that `__call__` samples from, per row of
        logits (…, vocab), row i coming after contexts[i] (None: no penalties, as for a drafter's
        guess); at temperature 0 it is one-hot at the argmax."""
        p = self.params
        scores = logits.float().cpu()
        if contexts is not None and p.penalized:
            rows = scores.reshape(-1, scores.shape[-1])
            scores = torch.stack([self.penalize(r, c) for r, c in zip(rows, contexts, strict=True)]).reshape(
                scores.shape)
        if p.greedy:
            return torch.zeros_like(scores).scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)
        scores = scores / p.temperature
        return min_p_filter(top_p_filter(top_k_filter(scores, p.top_k), p.top_p), p.min_p).softmax(-1)
