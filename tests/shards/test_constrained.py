"""Structured output on the default model: JSON answers parse and follow their schema under greedy
and seeded sampling, with and without speculation (drafts the grammar refuses included), and a
schema the engine cannot compile is refused before anything runs."""

from __future__ import annotations

import argparse
import json

import jsonschema
import pytest
import torch

from shards.constrained import JsonConstraint, ResponseFormatError, json_grammar
from shards.drafting import ModelDrafter
from swarmlm.generate import register, run_generation

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "hobbies"],
          "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0},
                         "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20},
                                     "maxItems": 3}}}
AS_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
ASK = "Describe a fictional person as JSON with their name, age and hobbies."
FRUITS = "List three fruits as a JSON object."
SAMPLED = {"temperature": 0.9, "seed": 7}


@pytest.fixture(scope="module")
def self_drafter(local_model):
    """The model drafts for itself without the grammar, so some drafts are refused and cut."""
    with ModelDrafter(local_model, local_model.store.manifest) as drafter:
        yield drafter


def person(text: str) -> dict:
    value = json.loads(text)
    jsonschema.validate(value, PERSON)
    return value


@pytest.mark.parametrize("sampling", [{}, SAMPLED], ids=["greedy", "seeded"])
def test_json_schema_answers_validate(local_model, sampling):
    result = local_model.generate(ASK, 60, response_format=AS_SCHEMA, **sampling)
    assert result.finish_reason == "stop"  # the grammar ended the answer when the object closed
    person(result.text)


@pytest.mark.parametrize("sampling", [{}, SAMPLED], ids=["greedy", "seeded"])
def test_json_object_answers_parse(local_model, sampling):
    result = local_model.generate(FRUITS, 60,
                                  response_format={"type": "json_object"}, **sampling)
    assert result.finish_reason == "stop"
    assert isinstance(json.loads(result.text), dict)


def test_seeded_answers_repeat(local_model):
    first = local_model.generate(ASK, 60, response_format=AS_SCHEMA, **SAMPLED)
    assert local_model.generate(ASK, 60, response_format=AS_SCHEMA, **SAMPLED).token_ids == first.token_ids


@pytest.mark.usefixtures("always_max_drafts")
def test_greedy_speculation_gives_the_same_answer(local_model, self_drafter):
    plain = local_model.generate(ASK, 60, response_format=AS_SCHEMA)
    fast = local_model.generate(ASK, 60, response_format=AS_SCHEMA, speculative=4, drafter=self_drafter)
    assert fast.token_ids == plain.token_ids
    assert fast.extra["speculation"]["accepted"] > 0  # drafts were verified under the mask, not skipped
    person(fast.text)


@pytest.mark.usefixtures("always_max_drafts")
@pytest.mark.parametrize("drafter", ["prompt lookup", "model"])
def test_sampled_speculation_validates(local_model, self_drafter, drafter):
    result = local_model.generate(ASK, 60, response_format=AS_SCHEMA, speculative=4,
                                  drafter=self_drafter if drafter == "model" else None, **SAMPLED)
    assert result.finish_reason == "stop"
    person(result.text)


def test_logprobs_describe_the_unmasked_model(local_model):
    """The first token must be '{' under the grammar, yet its log-probability is the model's own."""
    free = local_model.generate(ASK, 1, logprobs=0)
    forced = local_model.generate(ASK, 1, logprobs=0, response_format={"type": "json_object"})
    assert local_model.tokenizer.decode(forced.token_ids).startswith("{")
    if forced.token_ids != free.token_ids:
        assert forced.logprobs[0].logprob < free.logprobs[0].logprob


def test_rollback_restores_the_state(local_model):
    """Masking along drafts leaves the matcher where it was: the same mask comes out again."""
    constraint = JsonConstraint(json_grammar(AS_SCHEMA), local_model.tokenizer,
                                local_model.head.embed_tokens.num_embeddings, sorted(local_model.eos_ids))
    logits = torch.zeros(3, local_model.head.embed_tokens.num_embeddings)
    drafts = local_model.tokenizer('{"name', add_special_tokens=False)["input_ids"][:2]
    assert constraint.valid_prefix(drafts) == len(drafts)
    before = constraint.mask(logits[0])
    rows = constraint.mask_along(logits[:len(drafts) + 1], drafts)
    assert torch.equal(rows[0], before) and torch.equal(constraint.mask(logits[0]), before)
    assert not torch.equal(rows[1], before)


@pytest.mark.parametrize("response_format, says", [
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "'name'"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, "nonsense"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(?<=a)b"}}},
     "look-around"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/gone"}}}, "gone"),
])
def test_bad_formats_are_refused(local_model, response_format, says):
    with pytest.raises(ResponseFormatError, match=says):
        json_grammar(response_format)
    with pytest.raises(ResponseFormatError, match=says):
        local_model.generate(ASK, 4, response_format=response_format)


def test_the_cli_takes_a_schema_file(local_model, tmp_path, capsys):
    (tmp_path / "person.json").write_text(json.dumps(PERSON))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["generate", "--local", "--json", "--max-new-tokens", "60", "--json-schema",
                              str(tmp_path / "person.json"), ASK])
    assert run_generation(local_model, args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["token_ids"] == local_model.generate(ASK, 60, response_format=AS_SCHEMA).token_ids
    person(out["text"])
