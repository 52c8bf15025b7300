"""Sampling features against reference computations: Hugging Face's logits processors, OpenAI's
penalty formula worked by hand, log-softmax of the model's own logits, and step-by-step greedy
decoding of a tiny random model; with and without speculation; seeds repeat; n answers share a prefill."""

from __future__ import annotations

import pytest
import torch
from transformers import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from shards.errors import ShardsError
from shards.logits_processing import (min_p_filter, presence_frequency_penalty, repetition_penalty, token_logprobs,
                                      top_k_filter)
from shards.sampling import Sampler, SamplingParams

from .random_model import RandomModel

LOGITS = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.5, 1.0])
PROMPT = [3, 7, 1, 3, 9]


@pytest.fixture(scope="module")
def model() -> RandomModel:
    return RandomModel(vocab_size=16, seed=1)


def test_repetition_penalty_is_hugging_faces():
    seen = [0, 1, 1, 4]
    ours = repetition_penalty(LOGITS, seen, 1.3)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([seen]), LOGITS[None].clone())[0]
    torch.testing.assert_close(ours, theirs)
    assert ours.tolist() == pytest.approx([2.0 / 1.3, -1.3, 0.5, 3.0, -0.65, 1.0])


def test_presence_and_frequency_penalties_follow_openais_formula():
    generated = [3, 3, 0]  # token 3 twice, token 0 once
    ours = presence_frequency_penalty(LOGITS, generated, presence=0.5, frequency=0.25)
    expected = LOGITS.tolist()
    expected[3] -= 2 * 0.25 + 0.5
    expected[0] -= 1 * 0.25 + 0.5
    assert ours.tolist() == pytest.approx(expected)


def test_penalties_count_the_prompt_only_for_repetition():
    sampler = Sampler(SamplingParams(presence_penalty=1.0, repetition_penalty=2.0), prompt_length=2)
    context = [0, 2, 3]  # prompt [0, 2], answer so far [3]
    expected = LOGITS.tolist()
    expected[0] /= 2
    expected[2] /= 2
    expected[3] = 3.0 / 2 - 1.0
    assert sampler.penalize(LOGITS, context).tolist() == pytest.approx(expected)


def test_warpers_are_hugging_faces():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(min_p_filter(scores, 0.1), MinPLogitsWarper(0.1)(None, scores.clone()))
    torch.testing.assert_close(top_k_filter(scores, 5), TopKLogitsWarper(5)(None, scores.clone()))


def test_sampler_distribution_is_hugging_faces_chain():
    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2)
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1)) * 3
    context = [4, 4, 9, 17]
    scores = logits[None].clone()
    for step in (RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(0.7), TopKLogitsWarper(20),
                 TopPLogitsWarper(0.9), MinPLogitsWarper(0.05)):
        scores = step(torch.tensor([context]), scores)
    ours = Sampler(params, prompt_length=len(context)).probs(logits[None], [context])
    torch.testing.assert_close(ours, scores.softmax(-1), atol=1e-6, rtol=1e-5)


def test_token_logprobs_are_the_log_softmax():
    got = token_logprobs(LOGITS, 2, top=3)
    reference = torch.log_softmax(LOGITS, -1)
    assert got.logprob == pytest.approx(float(reference[2]))
    assert [t for t, _ in got.top] == [3, 0, 5]
    assert [lp for _, lp in got.top] == pytest.approx(reference[[3, 0, 5]].tolist())


def test_out_of_range_parameters_are_refused():
    for bad in (dict(min_p=1.5), dict(presence_penalty=3.0), dict(repetition_penalty=0.0)):
        with pytest.raises(ShardsError):
            SamplingParams(**bad)


def reference_greedy(model: RandomModel, prompt: list[int], steps: int, params: SamplingParams):
    """Step-by-step greedy decoding with the whole sequence re-run each step (no cache), penalties by hand."""
    tokens: list[int] = []
    rows = []
    for _ in range(steps):
        logits = model.next_logits(torch.tensor([prompt + tokens]))[0]
        scores = repetition_penalty(logits, prompt + tokens, params.repetition_penalty)
        scores = presence_frequency_penalty(scores, tokens, params.presence_penalty, params.frequency_penalty)
        rows.append(logits)
        tokens.append(int(scores.argmax()))
    return tokens, rows


PENALTIES = [dict(repetition_penalty=1.5), dict(presence_penalty=1.5, frequency_penalty=0.7),
             dict(repetition_penalty=0.8, frequency_penalty=-0.5)]


@pytest.mark.parametrize("penalties", PENALTIES, ids=["repetition", "presence-frequency", "mixed"])
@pytest.mark.parametrize("speculative", [0, 3], ids=["plain", "speculative"])
def test_greedy_with_penalties_and_logprobs_equals_the_reference(model, penalties, speculative, always_max_drafts):
    expected, rows = reference_greedy(model, PROMPT, 12, SamplingParams(**penalties))
    plain, _ = reference_greedy(model, PROMPT, 12, SamplingParams())
    assert expected != plain  # the penalties change the answer, so the comparison means something
    g = model.generate(PROMPT, 12, ignore_eos=True, logprobs=2, speculative=speculative, **penalties)
    assert g.token_ids == expected
    assert g.logprobs is not None and len(g.logprobs) == 12
    for got, token, row in zip(g.logprobs, expected, rows):
        reference = torch.log_softmax(row, -1)
        assert got.token_id == token
        assert got.logprob == pytest.approx(float(reference[token]), abs=1e-4)
        assert [t for t, _ in got.top] == reference.topk(2).indices.tolist()


def test_greedy_ignores_warpers(model):
    plain = model.generate(PROMPT, 8, ignore_eos=True).token_ids
    assert model.generate(PROMPT, 8, ignore_eos=True, top_k=1, min_p=0.9, top_p=0.1).token_ids == plain


@pytest.mark.parametrize("speculative", [0, 3], ids=["plain", "speculative"])
def test_seeded_sampling_repeats(model, speculative):
    options = dict(temperature=1.0, top_k=8, min_p=0.02, presence_penalty=0.5, ignore_eos=True,
                   speculative=speculative)
    first = model.generate(PROMPT, 20, seed=7, **options).token_ids
    assert model.generate(PROMPT, 20, seed=7, **options).token_ids == first
    assert model.generate(PROMPT, 20, seed=8, **options).token_ids != first


class CountingRunner:
    """Records where each forward starts and how many positions it runs."""

    def __init__(self, inner) -> None:
        self.inner, self.forwards = inner, []

    def forward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        self.forwards.append((start, hidden.shape[1]))
        return self.inner.forward(hidden, start)

    def close(self, length: int | None = None) -> None:
        self.inner.close(length)

    def served(self) -> None:
        return self.inner.served()


def test_n_answers_share_the_prefill_and_use_successive_seeds(model):
    session = model.inference_session(64)
    session.runner = runner = CountingRunner(session.runner)
    with session:
        answers = session.choices(PROMPT, 3, 6, temperature=1.0, seed=11, ignore_eos=True)
    prefills = [f for f in runner.forwards if f[1] > 1 or f[0] == len(PROMPT) - 1]
    assert prefills == [(0, len(PROMPT)), (len(PROMPT) - 1, 1), (len(PROMPT) - 1, 1)]  # the prompt ran once
    for i, answer in enumerate(answers):
        alone = model.generate(PROMPT, 6, temperature=1.0, seed=11 + i, ignore_eos=True)
        assert answer.token_ids == alone.token_ids
    assert len({tuple(a.token_ids) for a in answers}) > 1


def test_n_greedy_answers_are_the_same(model):
    answers = model.choices(PROMPT, 2, 5, ignore_eos=True, logprobs=0)
    assert answers[0].token_ids == answers[1].token_ids == model.generate(PROMPT, 5, ignore_eos=True).token_ids
    assert answers[1].logprobs is not None and all(lp.top == () for lp in answers[1].logprobs)
