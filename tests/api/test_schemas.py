"""OpenAI request bodies: what the gateway accepts (with OpenAI's defaults) and what it refuses, naming why."""

from __future__ import annotations

from typing import Any

import pytest

from swarmlm.api.errors import APIError
from swarmlm.api.schemas import GenerationRequest, chat_request, completion_request

HI = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> GenerationRequest:
    return chat_request({"model": "m", "messages": HI, **fields})


def refusal(parse: Any, body: Any) -> APIError:
    with pytest.raises(APIError) as raised:
        parse(body)
    assert raised.value.status == 400
    return raised.value


def test_a_minimal_chat_request_takes_openai_defaults() -> None:
    req = chat()
    assert req == GenerationRequest(model="m", prompt=[{"role": "user", "content": "hi"}], raw=False,
                                    max_tokens=None, temperature=1.0, top_p=1.0, seed=None, stop=(), stream=False,
                                    include_usage=False)


def test_null_means_default_and_unknown_fields_are_ignored() -> None:
    assert chat(temperature=None, top_p=None, n=None, stop=None, stream=None, store=True, user="u") == chat()


def test_neutral_values_of_unsupported_features_pass() -> None:
    assert chat(n=1, presence_penalty=0, frequency_penalty=0.0, logprobs=False, tool_choice="none", tools=[],
                response_format={"type": "text"}, logit_bias={}) == chat()


def test_messages_become_a_conversation_of_plain_text() -> None:
    req = chat_request({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None}]})
    assert req.prompt == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a\nb"},
                          {"role": "assistant", "content": ""}]


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert chat(max_tokens=10, max_completion_tokens=5).max_tokens == 5
    assert chat(max_tokens=10).max_tokens == 10


def test_stop_and_streaming_options() -> None:
    assert chat(stop="\n").stop == ("\n",)
    assert chat(stop=["a", "b"]).stop == ("a", "b")
    assert chat(stream=True, stream_options={"include_usage": True}).include_usage


@pytest.mark.parametrize("temperature, top_p, sampling", [
    (0.0, 0.9, {"temperature": 0.0, "top_p": 0.9}),
    (0.7, 0.0, {"temperature": 0.0, "top_p": 1.0}),  # top_p 0: the likeliest token
    (0.7, 0.9, {"temperature": 0.7, "top_p": 0.9}),
])
def test_sampling_arguments(temperature: float, top_p: float, sampling: dict) -> None:
    assert chat(temperature=temperature, top_p=top_p, seed=3).sampling() == {**sampling, "seed": 3, "stop": ()}


@pytest.mark.parametrize("prompt, want", [("hi", "hi"), ([1, 2, 3], [1, 2, 3]), (["hi"], "hi"), ([[4, 5]], [4, 5])])
def test_a_completion_takes_one_prompt_of_text_or_tokens(prompt: Any, want: Any) -> None:
    req = completion_request({"model": "m", "prompt": prompt, "max_tokens": 4})
    assert req.prompt == want and req.raw and req.max_tokens == 4


@pytest.mark.parametrize("fields, param", [
    ({"temperature": 3}, "temperature"),
    ({"temperature": "0.5"}, "temperature"),  # strict: no strings for numbers
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": 2**64}, "seed"),
    ({"stream": "yes"}, "stream"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"model": None}, "model"),
])
def test_invalid_values_are_refused_naming_their_parameter(fields: dict, param: str) -> None:
    error = refusal(chat_request, {"model": "m", "messages": HI, **fields})
    assert error.param == param and error.code == "invalid_value" and f"'{param}'" in error.message


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert "JSON object" in refusal(chat_request, ["model"]).message


def test_a_missing_model_is_named() -> None:
    assert refusal(chat_request, {"messages": HI}).param == "model"


@pytest.mark.parametrize("fields, param", [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
])
def test_features_the_gateway_cannot_honour_are_refused(fields: dict, param: str) -> None:
    error = refusal(chat_request, {"model": "m", "messages": HI, **fields})
    assert error.param == param and error.code == "unsupported_parameter"


@pytest.mark.parametrize("fields, param", [
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_inconsistent_options_are_refused(fields: dict, param: str) -> None:
    assert refusal(chat_request, {"model": "m", "messages": HI, **fields}).param == param


@pytest.mark.parametrize("prompt", [["a", "b"], "", [], [[]]])
def test_a_completion_needs_exactly_one_nonempty_prompt(prompt: Any) -> None:
    assert refusal(completion_request, {"model": "m", "prompt": prompt}).param == "prompt"
