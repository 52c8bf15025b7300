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
def cache_tokens_per_token(samples: int = 100_000, seed: int = 0) -> float:
    """E[(prompt + answer) · answer] / E[answer]: the cache a session holds, weighted by the tokens it makes,
    which is what each generated token costs in cache-token-seconds per second of its time per token. Long
    answers hold long caches for long, so it is well above the mean length (~880 against ~500)."""
    rng = random.Random(seed)
    held = made = 0
    for _ in range(samples):
        prompt, answer = lengths(rng)
        held += (prompt + answer) * answer
        made += answer
    return held / made
