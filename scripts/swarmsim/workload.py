"""Clients: Poisson arrivals, prompt and answer lengths with ShareGPT's means.

Kwon et al. (vLLM, SOSP 2023, §6.1) report ShareGPT conversations average 161 input and 338 output
tokens; lengths are drawn log-normal with those means (σ = 1, an assumption for the spread).
"""

from __future__ import annotations

import functools
import math
import random

PROMPT_MEAN, ANSWER_MEAN, SIGMA = 161, 338, 1.0


def _lognormal(rng: random.Random, mean: float, cap: int) -> int:
    mu = math.log(mean) - SIGMA ** 2 / 2
    return max(1, min(cap, int(rng.lognormvariate(mu, SIGMA))))


def lengths(rng: random.Random, cap: int = 2048) -> tuple[int, int]:
    """(prompt tokens, answer tokens) of one session."""
    return _lognormal(rng, PROMPT_MEAN, cap), _lognormal(rng, ANSWER_MEAN, cap)


def next_arrival(rng: random.Random, rate_per_s: float) -> float:
    return rng.expovariate(rate_per_s)


@functools.cache
def _sessions(samples: int = 100_000, seed: int = 0) -> tuple[tuple[int, int], ...]:
    rng = random.Random(seed)
    return tuple(lengths(rng) for _ in range(samples))


@functools.cache
def cache_tokens_per_token() -> float:
    """E[(prompt + answer) · answer] / E[answer]: the cache a session holds, weighted by the tokens it makes,
    which is what each generated token costs in cache-token-seconds per second of its time per token. Long
    answers hold long caches for long, so it is well above the mean length (~880 against ~500)."""
    sessions = _sessions()
    return sum((p + a) * a for p, a in sessions) / sum(a for _, a in sessions)


@functools.cache
def context_per_token() -> float:
    """E[prompt · answer + answer · (answer − 1) / 2] / E[answer]: the cached tokens a generated token attends
    (its prompt and the answer before it), averaged over the tokens made: what a step reads of KV cache."""
    sessions = _sessions()
    return sum(p * a + a * (a - 1) / 2 for p, a in sessions) / sum(a for _, a in sessions)
