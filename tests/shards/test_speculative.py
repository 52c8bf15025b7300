"""The speculative rule, the draft-length controller, prompt lookup and the draft compatibility check,
as pure functions on hand-made inputs."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch
from scipy.stats import chisquare

from shards.drafting import IncompatibleDraftError, PromptLookupDrafter, check_compatible
from shards.errors import ShardsError
from shards.manifest import FileEntry
from shards.sampling import Sampler, SamplingParams
from shards.speculative import (AdaptiveDraftLength, accept_greedy, accept_sampled, acceptance_probability,
                                expected_tokens_per_trip, residual)

P = torch.tensor([0.5, 0.3, 0.2, 0.0])
Q = torch.tensor([0.25, 0.6, 0.1, 0.05])
GREEDY = Sampler(SamplingParams())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- greedy -------------------------------------------------------------------------------------

def test_greedy_keeps_matching_drafts_and_adds_the_targets_next_token():
    assert accept_greedy([5, 6, 7, 8], [5, 6, 7]) == [5, 6, 7, 8]  # all kept, plus the bonus
    assert accept_greedy([5, 6, 7, 8], [5, 9, 7]) == [5, 6]  # first mismatch: the target's token instead
    assert accept_greedy([4, 6, 7, 8], [5, 6, 7]) == [4]
    assert accept_greedy([3], []) == [3]


def test_the_target_must_judge_one_position_more_than_there_are_drafts():
    with pytest.raises(ValueError):
        accept_greedy([1, 2], [1, 2])
    with pytest.raises(ValueError):
        accept_sampled(torch.full((2, 4), 0.25), [1, 2], None, _gen(0))


# --- sampling: the formula ------------------------------------------------------------------------

def test_acceptance_probability_is_min_of_one_and_p_over_q():
    assert acceptance_probability(P, Q, 0) == 1.0  # p >= q
    assert acceptance_probability(P, Q, 1) == pytest.approx(0.3 / 0.6)
    assert acceptance_probability(P, Q, 2) == 1.0
    assert acceptance_probability(P, Q, 3) == 0.0  # the target never says this token
    with pytest.raises(ValueError, match="probability 0"):
        acceptance_probability(P, torch.tensor([0.0, 0.5, 0.5, 0.0]), 0)


def test_residual_is_the_normalised_excess_of_p_over_q():
    torch.testing.assert_close(residual(P, Q), torch.tensor([0.25, 0.0, 0.1, 0.0]) / 0.35)
    torch.testing.assert_close(residual(P, P), P)  # nothing left over: rejection cannot happen anyway


def test_accepting_or_else_drawing_the_residual_gives_exactly_p():
    """P(out = x) = q(x)·min(1, p(x)/q(x)) + P(reject)·residual(x) must equal p(x), for any p and q."""
    g = _gen(1)
    for _ in range(20):
        p = torch.rand(6, generator=g, dtype=torch.float64).softmax(0)
        q = (torch.rand(6, generator=g, dtype=torch.float64) * 3).softmax(0)
        kept = torch.tensor([q[x] * acceptance_probability(p, q, x) for x in range(6)], dtype=torch.float64)
        torch.testing.assert_close(kept + (1 - kept.sum()) * residual(p, q), p)


def test_a_draft_the_target_likes_at_least_as_much_is_always_kept():
    target = torch.stack([P, torch.tensor([0.0, 0.0, 1.0, 0.0])])
    for seed in range(50):
        assert accept_sampled(target, [0], Q[None], _gen(seed)) == [0, 2]  # kept, then the certain bonus


def test_a_draft_the_target_never_says_is_always_replaced_from_the_residual():
    target = torch.stack([P, P])
    for seed in range(50):
        out = accept_sampled(target, [3], Q[None], _gen(seed))
        assert len(out) == 1 and out[0] in (0, 2)  # where p exceeds q


def test_a_certain_draft_is_kept_with_probability_p_and_otherwise_replaced_by_p_without_it():
    n, g = 20000, _gen(2)
    target = torch.stack([P, P])
    outcomes = [accept_sampled(target, [1], None, g) for _ in range(n)]
    kept = sum(len(o) == 2 for o in outcomes)
    assert abs(kept / n - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5
    replaced = Counter(o[0] for o in outcomes if len(o) == 1)
    assert set(replaced) <= {0, 2}
    total = replaced.total()
    assert chisquare([replaced[0], replaced[2]], [total * 0.5 / 0.7, total * 0.2 / 0.7]).pvalue > 1e-3


def test_sampled_drafts_leave_the_first_token_distributed_as_p():
    n, g = 20000, _gen(3)
    target = torch.stack([P, torch.full((4,), 0.25)])
    firsts, kept = Counter(), 0
    for _ in range(n):
        draft = int(torch.multinomial(Q, 1, generator=g))
        out = accept_sampled(target, [draft], Q[None], g)
        firsts[out[0]] += 1
        kept += len(out) == 2
    assert firsts[3] == 0
    assert chisquare([firsts[x] for x in range(3)], [n * float(P[x]) for x in range(3)]).pvalue > 1e-3
    rate = float(torch.minimum(P, Q).sum())  # the expected acceptance: sum over x of min(p, q)
    assert abs(kept / n - rate) < 4 * (rate * (1 - rate) / n) ** 0.5


def test_sampler_probs_is_what_the_sampler_draws_from():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0], [0.0, 3.0, 0.0, 1.0, 2.0]])
    top = Sampler(SamplingParams(temperature=0.7, top_k=3, top_p=0.8)).probs(logits)
    assert (top > 0).sum(-1).tolist() == [2, 2]  # top-k keeps 3, top-p then cuts to the 2 that reach 0.8
    torch.testing.assert_close(top.sum(-1), torch.ones(2))
    assert GREEDY.probs(logits).tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]


# --- how many drafts --------------------------------------------------------------------------------

def test_expected_tokens_per_trip_is_the_geometric_sum():
    assert expected_tokens_per_trip(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)
    assert expected_tokens_per_trip(0.0, 4) == 1.0
    assert expected_tokens_per_trip(1.0, 4) == 5.0


def _controller(times: dict[int, float], kept: int, drafted: int, trips: int, max_draft: int = 6):
    c = AdaptiveDraftLength(max_draft)
    for _ in range(trips):
        for positions, seconds in times.items():
            c.record_forward(positions, seconds)
        c.record_trip(drafted, kept)
    return c


def test_expensive_trips_and_good_drafts_draft_the_most():
    c = _controller({1: 0.200, 7: 0.210}, kept=6, drafted=6, trips=10)  # a WAN chain: latency dominates
    assert c.choose() == 6
    assert c.choose(limit=2) == 2  # bounded by what the remaining tokens allow


def test_drafts_that_keep_failing_turn_drafting_off():
    c = _controller({1: 0.030, 2: 0.040, 5: 0.060}, kept=0, drafted=4, trips=20)
    assert c.acceptance < 0.1 and c.choose() == 0


def test_positions_as_expensive_as_a_trip_are_not_worth_drafting():
    c = _controller({n: 0.03 * n for n in range(1, 8)}, kept=3, drafted=4, trips=10)  # compute-bound
    assert c.choose() == 0
    cheap = _controller({n: 0.03 + 0.001 * n for n in range(1, 8)}, kept=3, drafted=4, trips=10)
    assert cheap.choose() >= 3


def test_drafting_is_retried_after_a_quiet_spell():
    c = _controller({1: 0.030, 2: 0.040, 3: 0.048}, kept=0, drafted=2, trips=10, max_draft=2)
    assert c.choose() == 0
    retried = next(i for i in range(200) if (c.record_trip(0, 0), c.choose())[1] > 0)
    assert 0 < retried < 50


def test_forward_costs_interpolate_measured_lengths_and_extrapolate_cheaply():
    c = AdaptiveDraftLength(6)
    assert c.choose() > 0  # nothing measured: the prior (memory-bound, half the drafts kept) says draft
    c.record_forward(3, 0.050)
    c.record_forward(200, 9.0)  # a prefill: another regime, ignored
    assert c.forward_cost(1) == pytest.approx(0.050 / 1.2)
    c.record_forward(1, 0.040)
    c.record_forward(5, 0.060)
    assert c.forward_cost(2) == pytest.approx(0.045) and c.forward_cost(4) == pytest.approx(0.055)
    assert c.forward_cost(7) == pytest.approx(0.060 + 2 * 0.1 * 0.040)
    assert 200 not in c.forward_seconds


def test_max_draft_zero_never_drafts():
    assert AdaptiveDraftLength(0).choose() == 0
    with pytest.raises(ValueError):
        AdaptiveDraftLength(-1)


# --- prompt lookup ------------------------------------------------------------------------------------

def _lookup(context, k, **kw):
    return PromptLookupDrafter(**kw).propose(context, k, GREEDY)


def test_prompt_lookup_prefers_the_longest_ngram_then_the_latest_match():
    assert _lookup([1, 2, 3, 9, 5, 3, 8, 1, 2, 3], 3).tokens == [9, 5, 3]  # the 3-gram, not the later 1-gram
    assert _lookup([1, 2, 7, 1, 2, 8, 4, 1, 2], 2).tokens == [8, 4]  # the latest of two 2-gram matches
    assert _lookup([1, 2, 7, 1, 2, 8, 4, 1, 2], 2).probs is None  # certain drafts


def test_prompt_lookup_copies_through_its_own_output_for_repeats():
    assert _lookup([5, 5, 5], 4).tokens == [5, 5, 5, 5]
    assert _lookup([9, 1, 2, 1, 2], 5).tokens == [1, 2, 1, 2, 1]


def test_prompt_lookup_without_a_match_drafts_nothing():
    assert _lookup([1, 2, 3, 4], 3).tokens == []
    assert _lookup([7], 3).tokens == []
    assert _lookup([1, 2, 9, 3, 2], 3, min_ngram=2).tokens == []  # only a 1-gram matches
    with pytest.raises(ShardsError):
        PromptLookupDrafter(min_ngram=3, max_ngram=2)


# --- draft compatibility ------------------------------------------------------------------------------

def _with_file(manifest, name: str, digest: str):
    files = [f for f in manifest.tokenizer if not f.file.endswith("/" + name)]
    return replace(manifest, tokenizer=tuple(files) + (FileEntry(f"tokenizer/{name}", digest, 1),))


def test_a_draft_with_the_same_vocabulary_is_compatible(default_store):
    target = default_store.manifest
    check_compatible(target, target)
    check_compatible(target, _with_file(target, "chat_template.jinja", "ab" * 32))  # formatting only


def test_a_draft_with_another_tokenizer_or_vocabulary_size_is_refused(default_store):
    target = default_store.manifest
    with pytest.raises(IncompatibleDraftError, match="tokenizer.json"):
        check_compatible(target, _with_file(target, "tokenizer.json", "cd" * 32))
    with pytest.raises(IncompatibleDraftError, match="49152"):
        check_compatible(target, replace(target, config=replace(target.config, vocab_size=32000)))
    with pytest.raises(IncompatibleDraftError, match="no tokenizer"):
        check_compatible(target, replace(target, tokenizer=()))
