"""Clients: Poisson arrivals, prompt and answer lengths with ShareGPT's means.

Kwon et al. (vLLM, SOSP 2023, §6.1) report ShareGPT conversations average 161 input and 338 output
tokens; lengths are drawn log-normal with those means (σ = 1, an assumption for the spread).
"""

from __future__ import annotations

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
