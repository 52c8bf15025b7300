"""Greedy generation with speculation is token for token the same as without, on the default model,
whatever drafts (prompt lookup, the model itself, random weights); stops land exactly."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from shards.drafting import IncompatibleDraftError, ModelDrafter
from shards.local import LocalModel
from shards.pack import pack
from shards.sampling import Sampler, SamplingParams
from shards.store import ShardStore
from tests.cli_call import run_cli
from tests.conftest import SWARMLM

from .tiny import make_tiny_model

PARAGRAPH = ("The quick brown fox jumps over the lazy dog. It was a sunny day in the park, and children were "
             "playing near the fountain while their parents watched from wooden benches.")
REPEAT = f"Repeat the following paragraph exactly, replacing 'fox' with 'cat':\n\n{PARAGRAPH}"
CAPITAL = "What is the capital of France?"
COUNT = "Count from 1 to 20, one number per line."

pytestmark = pytest.mark.usefixtures("always_max_drafts")  # drafts every trip: asserted counts need no timing


@pytest.fixture(scope="module")
def self_drafter(local_model):
    """The target as its own draft: every draft must be kept, which proves the mechanics."""
    with ModelDrafter(local_model, local_model.store.manifest) as drafter:
        yield drafter


@pytest.fixture(scope="module")
def random_drafter(default_store, tmp_path_factory):
    """Random weights packed with the default model's tokenizer: compatible, and almost always wrong."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("random-draft")
    config = AutoConfig.for_model("llama", vocab_size=default_store.config.vocab_size, hidden_size=32,
                                  intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder / "hf")
    for f in (default_store.path / "tokenizer").iterdir():
        shutil.copy(f, folder / "hf" / f.name)
    pack(folder / "hf", folder / "store")
    with ModelDrafter(LocalModel.load(folder / "store"), default_store.manifest) as drafter:
        yield drafter


@pytest.fixture(scope="module")
def plain(local_model):
    """Non-speculative greedy results, computed once per prompt."""
    cache: dict[str, object] = {}

    def run(prompt: str, n: int, **kw):
        key = repr((prompt, n, sorted(kw.items())))
        if key not in cache:
            cache[key] = local_model.generate(prompt, n, **kw)
        return cache[key]

    return run


def test_prompt_lookup_on_a_repetitive_prompt_gives_the_same_tokens(local_model, plain):
    g = local_model.generate(REPEAT, 32, speculative=4)
    assert g.token_ids == plain(REPEAT, 32).token_ids
    stats = g.extra["speculation"]
    assert stats["accepted"] >= 8 and stats["trips"] < len(g.token_ids)  # several tokens per trip


def test_the_model_as_its_own_draft_keeps_every_draft(local_model, plain, self_drafter):
    g = local_model.generate(REPEAT, 32, speculative=4, drafter=self_drafter)
    assert g.token_ids == plain(REPEAT, 32).token_ids
    stats = g.extra["speculation"]
    assert stats["drafted"] > 0 and stats["accepted"] == stats["drafted"]


def test_a_random_draft_is_almost_never_kept_yet_changes_nothing(local_model, plain, random_drafter):
    g = local_model.generate(CAPITAL, 16, speculative=3, drafter=random_drafter)
    assert g.token_ids == plain(CAPITAL, 16).token_ids
    stats = g.extra["speculation"]
    assert stats["drafted"] > 0 and stats["acceptance_rate"] < 0.2


def test_the_draft_cache_grows_with_the_context(random_drafter):
    draft = random_drafter.propose(list(range(100, 400)), 3, Sampler(SamplingParams()))
    assert len(draft.tokens) == 3 and random_drafter.session.max_length >= 302


@pytest.mark.parametrize("n", [5, 7])  # the first trip's 5 tokens end exactly at 5, or overshoot 7 if unbounded
def test_max_new_tokens_is_exact_with_drafts_in_flight(local_model, plain, self_drafter, n):
    g = local_model.generate(REPEAT, n, speculative=4, drafter=self_drafter)
    assert g.token_ids == plain(REPEAT, 7).token_ids[:n] and g.finish_reason == "length"


def test_eos_inside_an_accepted_run_ends_generation(local_model, plain, self_drafter):
    g = local_model.generate(CAPITAL, 32, speculative=6, drafter=self_drafter)
    want = plain(CAPITAL, 32)
    assert (g.token_ids, g.text, g.finish_reason) == (want.token_ids, want.text, "stop")


def test_stop_strings_are_exact_in_a_stream(local_model, plain, self_drafter):
    events = list(local_model.stream(COUNT, 64, stop=["5"], speculative=4, drafter=self_drafter))
    want = plain(COUNT, 64, stop=["5"])
    assert [e.token_id for e in events if e.token_id is not None] == want.token_ids
    assert "".join(e.text for e in events) == want.text and "4" in want.text and "5" not in want.text


def test_a_speculative_session_rewinds_across_turns(local_model):
    turn = [{"role": "user", "content": REPEAT}]
    with local_model.inference_session(max_length=512, speculative=3) as s:
        first = s.generate(turn, 16)
        follow = turn + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Again."}]
        second = s.generate(follow, 16)
        assert first.extra["speculation"]["accepted"] > 0
    assert second.token_ids == local_model.generate(follow, 16).token_ids


def test_sampling_with_the_model_as_its_own_draft_keeps_nearly_every_draft(local_model, self_drafter):
    g = local_model.generate(REPEAT, 24, temperature=0.8, top_p=0.95, seed=3, speculative=3,
                             drafter=self_drafter, ignore_eos=True)
    stats = g.extra["speculation"]
    assert len(g.token_ids) == 24 and stats["drafted"] > 0 and stats["acceptance_rate"] > 0.8


def test_a_draft_of_another_vocabulary_is_a_clear_error(local_model, tmp_path, capsys):
    store = tmp_path / "tiny"
    pack(make_tiny_model("llama-mha", tmp_path / "hf"), store)
    with pytest.raises(IncompatibleDraftError, match="vocabulary has 256 tokens"):
        ModelDrafter(LocalModel.load(ShardStore(store)), local_model.store.manifest)
    proc = run_cli(["generate", "--local", "--max-draft", "2", "--draft-model", str(store), CAPITAL], capsys)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "256 tokens" in proc.stderr


def test_cli_max_draft_reports_speculation(capsys, plain):
    proc = run_cli(["generate", "--local", "--json", "--max-new-tokens", "32", "--max-draft", "3", REPEAT], capsys)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["token_ids"] == plain(REPEAT, 32).token_ids and out["speculation"]["max_draft"] == 3


def test_cli_draft_model_needs_max_draft(cli_env):
    proc = subprocess.run(SWARMLM + ["generate", "--local", "--draft-model", "smollm2-135m-instruct", CAPITAL],
                          capture_output=True, text=True, env=cli_env)
    assert proc.returncode == 2 and "--max-draft" in proc.stderr

