"""Pure functions from a position's logits to the scores a token is chosen from, and to log-probabilities.

The order is Hugging Face's `generate`: penalties on the model's logits (HF's repetition penalty,
then OpenAI's presence and frequency penalties), then temperature, top-k, top-p and min-p. Greedy
decoding takes the argmax after the penalties (the other steps never move the argmax).
Log-probabilities describe the model itself: the log-softmax of its raw logits, before any of
this (as vLLM reports them by default), so they do not depend on how the answer was sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class TokenLogprob:
    """One emitted token's log-probability under the model and the likeliest alternatives there."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # (token id, log-probability), likeliest first


def repetition_penalty(logits: torch.Tensor, seen: Sequence[int], penalty: float) -> torch.Tensor:
    """HF's RepetitionPenaltyLogitsProcessor on one row: every token in `seen` (prompt and answer so
    far) has its logit divided by `penalty` when positive and multiplied by it when negative."""
    if penalty == 1.0 or not seen:
        return logits
    ids = torch.tensor(sorted(set(seen)), dtype=torch.long)
    picked = logits[ids]
    return logits.index_copy(0, ids, torch.where(picked < 0, picked * penalty, picked / penalty))


def presence_frequency_penalty(logits: torch.Tensor, generated: Sequence[int], presence: float,
                               frequency: float) -> torch.Tensor:
    """OpenAI's penalties on one row: mu[j] - c[j] * frequency - (c[j] > 0) * presence, where c[j]
    counts token j in the answer so far (the prompt does not count)."""
    if (presence == 0 and frequency == 0) or not generated:
        return logits
    counts = torch.bincount(torch.tensor(list(generated), dtype=torch.long), minlength=logits.shape[-1])
    counts = counts[:logits.shape[-1]].to(logits.dtype)
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def top_k_filter(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest scores per row (ties at the k-th all stay), as HF's TopKLogitsWarper."""
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_filter(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of likeliest tokens whose probability reaches `p` (the token crossing it stays)."""
    if p >= 1:
        return scores
    sorted_scores, order = scores.sort(descending=True)
    probs = sorted_scores.softmax(-1)
    drop = probs.cumsum(-1) - probs >= p
    return scores.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def min_p_filter(scores: torch.Tensor, min_p: float) -> torch.Tensor:
    """HF's MinPLogitsWarper: drop tokens less likely than `min_p` times the likeliest one (which stays)."""
    if min_p <= 0:
        return scores
    probs = scores.softmax(-1)
    return scores.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), float("-inf"))


def token_logprobs(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """`token`'s log-probability under one row of raw logits, and the `top` likeliest tokens'."""
    logprobs = torch.log_softmax(logits.float(), -1)
    best = torch.topk(logprobs, min(top, logprobs.shape[-1])) if top > 0 else None
    alternatives = tuple(zip(best.indices.tolist(), best.values.tolist())) if best is not None else ()
    return TokenLogprob(int(token), float(logprobs[token]), alternatives)
