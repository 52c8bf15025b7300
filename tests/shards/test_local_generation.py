"""Local greedy generation through our block stack equals transformers' greedy generate."""

from __future__ import annotations

import json

import pytest
import torch

from shards.generation import encode_prompt
from tests.cli_call import run_cli

PROMPT = "What is the capital of France?"


def test_greedy_answer_and_ids_equal_transformers(local_model, reference_model):
    g = local_model.generate(PROMPT, max_new_tokens=32)
    assert g.text == "The capital of France is Paris."
    ids = encode_prompt(local_model.tokenizer, PROMPT)
    with torch.inference_mode():
        ref = reference_model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
    ref_new = ref[0, len(ids):].tolist()
    eos = local_model.eos_ids
    assert g.token_ids == [t for t in ref_new if t not in eos]
    assert ref_new[len(g.token_ids)] in eos and g.finish_reason == "stop"


def test_stream_yields_the_same_text_as_generate(local_model):
    streamed = "".join(e.text for e in local_model.stream(PROMPT, max_new_tokens=32))
    assert streamed == local_model.generate(PROMPT, max_new_tokens=32).text


def test_sampling_is_repeatable_with_a_seed(local_model):
    a = local_model.generate("Tell me a story", 16, temperature=0.9, top_p=0.9, top_k=50, seed=7)
    b = local_model.generate("Tell me a story", 16, temperature=0.9, top_p=0.9, top_k=50, seed=7)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 16


def test_stop_strings_end_generation_before_the_stop_text(local_model):
    g = local_model.generate("Count from 1 to 20, one number per line.", 64, stop=["5"])
    assert g.finish_reason == "stop" and "5" not in g.text and "4" in g.text


def test_multi_turn_session_reuses_its_cache(local_model):
    with local_model.inference_session(max_length=256) as s:
        first = s.generate([{"role": "user", "content": PROMPT}], 32)
        conversation = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": first.text},
                        {"role": "user", "content": "And of Germany?"}]
        cached_before = len(s.history)
        second = s.generate(conversation, 32)
        assert s.runner.cache.length > cached_before
    fresh = local_model.generate(conversation, 32)
    assert second.token_ids == fresh.token_ids and "Berlin" in second.text


@pytest.mark.model  # the command loads the default model itself
def test_cli_local_json(capsys):
    proc = run_cli(["generate", "--local", "--json", "--max-new-tokens", "32", PROMPT], capsys)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"] == "The capital of France is Paris." and out["token_ids"][0] == 504


@pytest.mark.model
def test_cli_local_streams_text(capsys):
    proc = run_cli(["generate", "--local", "--max-new-tokens", "32", PROMPT], capsys)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "The capital of France is Paris."
