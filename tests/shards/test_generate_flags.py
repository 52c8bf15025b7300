"""`swarmlm generate`'s sampling flags reach the sampler (in-process, on a tiny random model)."""

from __future__ import annotations

import argparse
import json

import pytest

from swarmlm.generate import register, run_generation

from .random_model import RandomModel


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["generate", "--local", *argv, "--", "unused"])


@pytest.fixture(scope="module")
def model() -> RandomModel:
    return RandomModel(vocab_size=16, seed=1)


def run(model: RandomModel, capsys, *argv: str):
    args = parse(*argv)
    args.prompt = [3, 7, 1, 3, 9]  # token ids: the random model has no tokenizer
    assert run_generation(model, args) == 0
    return capsys.readouterr().out


def test_json_carries_penalised_greedy_tokens_and_logprobs(model, capsys):
    out = json.loads(run(model, capsys, "--json", "--max-new-tokens", "6", "--repetition-penalty", "1.5",
                         "--presence-penalty", "1", "--frequency-penalty", "0.5", "--logprobs", "2"))
    expected = model.generate([3, 7, 1, 3, 9], 6, repetition_penalty=1.5, presence_penalty=1.0,
                              frequency_penalty=0.5, logprobs=2)
    assert out["token_ids"] == expected.token_ids
    assert [lp["logprob"] for lp in out["logprobs"]] == pytest.approx([lp.logprob for lp in expected.logprobs])
    assert all(len(lp["top"]) == 2 for lp in out["logprobs"])


def test_n_answers_with_a_seed_are_the_sdks(model, capsys):
    out = json.loads(run(model, capsys, "--json", "-n", "3", "--max-new-tokens", "5", "--temperature", "1",
                         "--top-k", "8", "--min-p", "0.05", "--seed", "4"))
    expected = model.choices([3, 7, 1, 3, 9], 3, 5, temperature=1.0, top_k=8, min_p=0.05, seed=4)
    assert [c["token_ids"] for c in out["choices"]] == [g.token_ids for g in expected]


def test_streamed_logprobs_are_printed_one_line_per_token(model, capsys):
    out = run(model, capsys, "--max-new-tokens", "4", "--logprobs", "1")
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 4 and all(float(line.split()[0]) <= 0 for line in lines)
