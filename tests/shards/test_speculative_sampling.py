"""Sampling with speculation draws from exactly the distribution ordinary sampling draws from.

End to end on a tiny random model (16 tokens): the first three generated tokens, over a thousand
seeded generations (ten thousand under `make long`, for power against small biases), are compared by chi-square with the exact joint distribution that
non-speculative sampling follows (computed from the model's processed distributions).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Sequence

import pytest
import torch
from scipy.stats import chisquare

from shards.drafting import Draft, Drafter, PromptLookupDrafter
from shards.sampling import Sampler, SamplingParams

from .random_model import RandomModel

TOKENS = 3
SAMPLES = [pytest.param(1200, id="1200"), pytest.param(10_000, id="10000", marks=pytest.mark.long)]
PENALISED = SamplingParams(temperature=0.9, min_p=0.02, presence_penalty=0.8, frequency_penalty=0.4,
                           repetition_penalty=1.3)


class FixedDistributionDrafter:
    """Drafts from one fixed distribution whatever the context: unlike the target's, so drafts are
    often rejected and the residual is exercised."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def propose(self, context: Sequence[int], k: int, sampler: Sampler) -> Draft:
        q = sampler.probs(self.logits).expand(k, -1)
        return Draft(torch.multinomial(q, 1, generator=sampler.generator)[:, 0].tolist(), q)


@pytest.fixture(scope="module")
def model() -> RandomModel:
    return RandomModel(vocab_size=16, seed=1)


@pytest.fixture(scope="module")
def prompt(model) -> list[int]:
    """A prompt that repeats the model's greedy text, so prompt lookup drafts what it likes."""
    text = model.generate([3], 6).token_ids
    return [3, *text, 3, *text[:2]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: a second thread only adds contention (tenfold slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def exact_distribution(model: RandomModel, prompt: list[int], params: SamplingParams) -> dict[tuple[int, ...], float]:
    sampler = Sampler(params, len(prompt))
    dist: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(TOKENS):
        seqs = list(dist)
        contexts = [prompt + list(s) for s in seqs]
        probs = sampler.probs(model.next_logits(torch.tensor(contexts)), contexts).double()
        dist = {s + (t,): dist[s] * float(row[t]) for s, row in zip(seqs, probs) for t in range(len(row)) if row[t] > 0}
    return dist


def fit_pvalue(counts: Counter, expected: dict[tuple[int, ...], float]) -> float:
    """Chi-square goodness of fit, cells expecting fewer than 5 samples pooled into one."""
    n = counts.total()
    assert set(counts) <= set(expected), "a sequence ordinary sampling can never produce"
    big = [s for s, p in expected.items() if p * n >= 5]
    observed = [counts[s] for s in big] + [n - sum(counts[s] for s in big)]
    wanted = [expected[s] * n for s in big] + [n * (1 - sum(expected[s] for s in big))]
    return float(chisquare(observed, wanted).pvalue)


def sample(model: RandomModel, prompt: list[int], params: SamplingParams, samples: int, speculative: int = 0,
           drafter: Drafter | None = None) -> tuple[Counter, int]:
    counts: Counter = Counter()
    accepted = 0
    with model.inference_session(len(prompt) + TOKENS + 1) as session:
        for seed in range(samples):
            g = session.generate(prompt, TOKENS, **{**asdict(params), "seed": seed}, speculative=speculative,
                                 drafter=drafter)
            counts[tuple(g.token_ids)] += 1
            accepted += g.extra.get("speculation", {}).get("accepted", 0)
    return counts, accepted


@pytest.mark.parametrize("samples", SAMPLES)
@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0), PENALISED], ids=["t1", "penalties-minp"])
def test_ordinary_sampling_fits_the_exact_distribution(model, prompt, params, samples):
    """The yardstick itself: without speculation the same test passes."""
    counts, _ = sample(model, prompt, params, samples)
    assert fit_pvalue(counts, exact_distribution(model, prompt, params)) > 1e-3


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0),
                                    SamplingParams(temperature=0.8, top_k=6, top_p=0.9), PENALISED],
                         ids=["t1", "topk-topp", "penalties-minp"])
@pytest.mark.parametrize("drafter", ["prompt-lookup", "fixed-distribution"])
@pytest.mark.parametrize("samples", SAMPLES)
def test_speculative_sampling_fits_the_exact_distribution(model, prompt, params, drafter, samples, always_max_drafts):
    noise = torch.randn(16, generator=torch.Generator().manual_seed(5)) * 1.5
    chosen = PromptLookupDrafter() if drafter == "prompt-lookup" else \
        FixedDistributionDrafter(model.next_logits(torch.tensor([prompt]))[0] + noise)
    counts, accepted = sample(model, prompt, params, samples, speculative=2, drafter=chosen)
    assert samples // 10 < accepted < samples * TOKENS  # drafts were both kept and rejected
    assert fit_pvalue(counts, exact_distribution(model, prompt, params)) > 1e-3
