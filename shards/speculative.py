"""Speculative decoding's two decisions, as pure functions of what a trip measured.

Which drafts to keep: a trip checks the last accepted token plus k drafted tokens in one forward
and yields the target's distribution at each of the k+1 positions. Greedy keeps the longest
prefix of drafts equal to the target's argmax, plus the target's own next token. Sampling uses
the rule of Leviathan et al. 2023 / Chen et al. 2023: draft x drawn from q is kept with
probability min(1, p(x)/q(x)); at the first rejection the token is drawn from
norm(max(0, p - q)) instead; if all k are kept a bonus token is drawn from the last p. Every
emitted token is then distributed exactly as ordinary sampling from p would give. A deterministic
draft (prompt lookup) is the case q = one-hot.

How many drafts: `AdaptiveDraftLength` (model in its docstring).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def accept_greedy(target_tokens: Sequence[int], draft_tokens: Sequence[int]) -> list[int]:
    """Tokens to emit: drafts while they equal the target's argmax, then the target's own token.

    `target_tokens` holds the target's argmax at each of the len(draft_tokens) + 1 positions.
    """
    _check_lengths(len(target_tokens), len(draft_tokens))
    out: list[int] = []
    for want, drafted in zip(target_tokens, draft_tokens):
        if want != drafted:
            break
        out.append(drafted)
    out.append(int(target_tokens[len(out)]))
    return out


def acceptance_probability(p: torch.Tensor, q: torch.Tensor, token: int) -> float:
    """min(1, p(x)/q(x)): how likely draft `token`, drawn from q, is kept against target p."""
    if q[token] <= 0:
        raise ValueError(f"draft token {token} has probability 0 under its own draft distribution")
    return min(1.0, float(p[token] / q[token]))


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): where the target puts more mass than the draft did.

    When p and q agree to rounding there is nothing left; then p itself is the correct choice
    (rejection had probability 0, so this only guards against float noise).
    """
    rest = (p - q).clamp_min(0)
    total = rest.sum()
    return rest / total if total > 0 else p


def accept_sampled(target_probs: torch.Tensor, draft_tokens: Sequence[int], draft_probs: torch.Tensor | None,
                   generator: torch.Generator) -> list[int]:
    """Tokens to emit under the speculative-sampling rule (see module docstring).

    `target_probs` (k+1, vocab) and `draft_probs` (k, vocab) are the processed distributions
    (`Sampler.probs`); `draft_probs` None means each draft was certain (one-hot). Draws come
    from `generator`: one uniform per judged draft, one token from a residual or the bonus.
    """
    k = len(draft_tokens)
    _check_lengths(target_probs.shape[0], k)
    out: list[int] = []
    for i, token in enumerate(draft_tokens):
        p = target_probs[i]
        q = draft_probs[i] if draft_probs is not None else _one_hot(token, p)
        if torch.rand((), generator=generator).item() < acceptance_probability(p, q, token):
            out.append(token)
            continue
        out.append(int(torch.multinomial(residual(p, q), 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(target_probs[k], 1, generator=generator)))
    return out


def _one_hot(token: int, like: torch.Tensor) -> torch.Tensor:
    q = torch.zeros_like(like)
    q[token] = 1.0
    return q


def _check_lengths(target_positions: int, drafts: int) -> None:
    if target_positions != drafts + 1:
        raise ValueError(f"the target judges {drafts} drafts with {drafts + 1} positions, got {target_positions}")


def expected_tokens_per_trip(acceptance: float, drafts: int) -> float:
    """(1 - a^(k+1)) / (1 - a): tokens a trip yields when each draft is kept with probability a
    independently, counting the target's own token that ends every trip."""
    if acceptance >= 1:
        return drafts + 1.0
    return (1 - acceptance ** (drafts + 1)) / (1 - acceptance)


class AcceptanceEstimate:
    """How likely a draft is kept, a: kept drafts count as successes and the first rejection of a trip
    as a failure (the estimate for geometric runs), both decayed by `decay` per trip recorded, on top
    of a prior of `prior` worth `weight` drafts. Decisions use an optimistic bound, one standard error
    above the estimate: trips recorded without drafts only decay the counts, so the bound widens again
    after a run of failures and drafting is retried rather than abandoned for good."""

    def __init__(self, prior: float = 0.5, weight: float = 2.0, decay: float = 0.9) -> None:
        self.prior, self.weight, self.decay = prior, weight, decay
        self.kept = 0.0
        self.failed = 0.0

    @property
    def value(self) -> float:
        """The estimate of a (decayed counts plus the prior)."""
        return (self.kept + self.weight * self.prior) / (self.kept + self.failed + self.weight)

    def optimistic(self) -> float:
        a, n = self.value, self.kept + self.failed + self.weight
        return min(1.0, a + math.sqrt(a * (1 - a) / n))

    def record(self, drafted: int, kept: int) -> None:
        """A trip judged `drafted` drafts and kept the first `kept` of them."""
        self.kept = self.kept * self.decay + kept
        self.failed = self.failed * self.decay + (1 if kept < drafted else 0)


class AdaptiveDraftLength:
    """Chooses k, the drafts per trip, to maximise expected tokens per second.

    Model. A trip with k drafts costs T(k) = F(k + 1) + d·k seconds, where F(n) is the runner's
    time for a forward of n positions (through every hop of a chain) and d the drafter's time
    per drafted token. It yields E(k) = (1 - a^(k+1)) / (1 - a) tokens when each draft is kept
    with probability a. We pick k in [0, max_draft] maximising E(k) / T(k), ties to the smaller k:
    expensive trips (F(1) large against F(n) - F(1)) favour many drafts; failing drafts (small a)
    favour few.

    F is measured, not assumed linear: a moving average per length n ≤ max_draft + 1 (longer
    forwards, such as a prompt's prefill, are another regime and ignored), linear between
    measured lengths. Beyond the longest one measured, each position adds `prior_position_cost`
    · F(1) (decoding is memory-bound, so an extra position is cheap until shown otherwise); an
    unmeasured F(1) is scaled down from the shortest measured length the same way; with nothing
    measured only ratios matter and F(1) = 1.

    a is an `AcceptanceEstimate` (prior `prior_accept` worth `prior_weight` drafts, decayed by
    `accept_decay` per trip); a caller that knows more about the drafts at hand (the ring's sampler:
    how long the n-gram match behind them is) passes its own estimate to `choose`.
    """

    def __init__(self, max_draft: int, *, prior_accept: float = 0.5, prior_weight: float = 2.0,
                 accept_decay: float = 0.9, cost_smoothing: float = 0.3, prior_position_cost: float = 0.1) -> None:
        if max_draft < 0:
            raise ValueError(f"max_draft must be >= 0, got {max_draft}")
        self.max_draft = max_draft
        self.cost_smoothing, self.prior_position_cost = cost_smoothing, prior_position_cost
        self.accept = AcceptanceEstimate(prior_accept, prior_weight, accept_decay)
        self.forward_seconds: dict[int, float] = {}  # moving average by positions per forward
        self.draft_seconds = 0.0  # moving average per drafted token

    @property
    def acceptance(self) -> float:
        """The estimate of a (decayed counts plus the prior)."""
        return self.accept.value

    def forward_cost(self, positions: int) -> float:
        """F(positions) in seconds (relative units before any forward is measured)."""
        points = dict(self.forward_seconds)
        if not points:
            return 1 + self.prior_position_cost * (positions - 1)
        if 1 not in points:
            shortest = min(points)
            points[1] = points[shortest] / (1 + self.prior_position_cost * (shortest - 1))
        if positions in points:
            return points[positions]
        below = max(n for n in points if n < positions)
        above = [n for n in points if n > positions]
        if not above:
            return points[below] + self.prior_position_cost * points[1] * (positions - below)
        hi = min(above)
        return points[below] + (points[hi] - points[below]) * (positions - below) / (hi - below)

    def record_forward(self, positions: int, seconds: float) -> None:
        """One runner forward of `positions` tokens took `seconds`."""
        if 1 <= positions <= self.max_draft + 1:
            old = self.forward_seconds.get(positions, seconds)
            self.forward_seconds[positions] = old + self.cost_smoothing * (seconds - old)

    def record_draft(self, tokens: int, seconds: float) -> None:
        """The drafter proposed `tokens` tokens in `seconds`."""
        if tokens > 0:
            per_token = seconds / tokens
            old = self.draft_seconds or per_token
            self.draft_seconds = old + self.cost_smoothing * (per_token - old)

    def record_trip(self, drafted: int, kept: int) -> None:
        """A trip judged `drafted` drafts and kept the first `kept` of them."""
        self.accept.record(drafted, kept)

    def choose(self, limit: int | None = None, accept: AcceptanceEstimate | None = None) -> int:
        """Drafts for the next trip, at most `limit` (what the remaining tokens and cache allow),
        by `accept` (default: the estimate over every trip recorded)."""
        top = self.max_draft if limit is None else max(0, min(self.max_draft, limit))
        a = (accept or self.accept).optimistic()
        rates = [expected_tokens_per_trip(a, k) / (self.forward_cost(k + 1) + self.draft_seconds * k)
                 for k in range(top + 1)]
        best = max(rates)
        return next(k for k, r in enumerate(rates) if r >= best * (1 - 1e-9))


class FixedDraftLength(AdaptiveDraftLength):
    """Always the most drafts allowed, whatever the measured costs: for seeded sampling, which must
    draw the same random numbers on every run."""

    def choose(self, limit: int | None = None, accept: AcceptanceEstimate | None = None) -> int:
        return self.max_draft if limit is None else max(0, min(self.max_draft, limit))
