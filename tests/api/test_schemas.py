"""OpenAI request bodies: what the gateway accepts (with OpenAI's defaults) and what it refuses, naming why."""

from __future__ import annotations

import functools
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


def test_neutral_values_pass() -> None:
    assert chat(n=1, presence_penalty=0, frequency_penalty=0.0, logprobs=False, tool_choice="none", tools=[],
                response_format={"type": "text"}, logit_bias={}, top_k=-1, min_p=0, repetition_penalty=1) == chat()


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
    neutral = {"top_k": 0, "min_p": 0.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
               "repetition_penalty": 1.0, "logprobs": None, "response_format": None, "tools": None}
    assert chat(temperature=temperature, top_p=top_p, seed=3).sampling() == {**sampling, **neutral, "seed": 3,
                                                                             "stop": ()}


def test_sampling_features_reach_the_sampler() -> None:
    req = chat(top_k=40, min_p=0.05, presence_penalty=0.5, frequency_penalty=-0.25, repetition_penalty=1.1, n=3,
               logprobs=True, top_logprobs=4, seed=9)
    assert req.n == 3
    assert req.sampling() == {"temperature": 1.0, "top_p": 1.0, "seed": 9, "stop": (), "top_k": 40, "min_p": 0.05,
                              "presence_penalty": 0.5, "frequency_penalty": -0.25, "repetition_penalty": 1.1,
                              "logprobs": 4, "response_format": None, "tools": None}


@pytest.mark.parametrize("fields, logprobs", [({}, None), ({"logprobs": False}, None), ({"logprobs": True}, 0),
                                              ({"logprobs": True, "top_logprobs": 20}, 20)])
def test_chat_logprobs_are_a_flag_and_a_count(fields: dict, logprobs: int | None) -> None:
    assert chat(**fields).logprobs == logprobs


def test_legacy_logprobs_are_a_count() -> None:
    assert completion_request({"model": "m", "prompt": "a", "logprobs": 3}).logprobs == 3
    assert completion_request({"model": "m", "prompt": "a", "logprobs": 0}).logprobs == 0
    assert completion_request({"model": "m", "prompt": "a"}).logprobs is None


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
    ({"n": 0}, "n"),
    ({"n": 17}, "n"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"min_p": 1.5}, "min_p"),
    ({"top_k": "5"}, "top_k"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"logprobs": 1}, "logprobs"),  # chat's is a flag
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
    ({"logit_bias": {"5": 1}}, "logit_bias"),
    ({"messages": [{"role": "function", "content": "x", "name": "f"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
])
def test_features_the_gateway_cannot_honour_are_refused(fields: dict, param: str) -> None:
    error = refusal(chat_request, {"model": "m", "messages": HI, **fields})
    assert error.param == param and error.code == "unsupported_parameter"


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize("response_format", [
    {"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA, "strict": True}}])
def test_json_formats_reach_the_generation(response_format: dict) -> None:
    req = chat(response_format=response_format)
    assert req.response_format == response_format and req.sampling()["response_format"] == response_format


@pytest.mark.parametrize("response_format, says", [
    ({"type": "xml"}, "'text', 'json_object' or 'json_schema'"),
    ("json_object", "must be an object"),
    ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "'name'"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "bogus"}}}, "bogus"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "string", "pattern": "(?=x)"}}},
     "look-around"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {"properties": {"a": {"enum": ["x" * 100] * 1000}}}}},
     "response_format schema"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": functools.reduce(
        lambda inner, _: {"type": "array", "items": inner}, range(100), {"type": "integer"})}}, "response_format schema"),
])
def test_bad_response_formats_are_refused_saying_why(response_format: Any, says: str) -> None:
    error = refusal(chat_request, {"model": "m", "messages": HI, "response_format": response_format})
    assert error.param == "response_format" and error.code == "invalid_value" and says in error.message


@pytest.mark.parametrize("fields, param", [
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
])
def test_inconsistent_options_are_refused(fields: dict, param: str) -> None:
    assert refusal(chat_request, {"model": "m", "messages": HI, **fields}).param == param


@pytest.mark.parametrize("prompt", [["a", "b"], "", [], [[]]])
def test_a_completion_needs_exactly_one_nonempty_prompt(prompt: Any) -> None:
    assert refusal(completion_request, {"model": "m", "prompt": prompt}).param == "prompt"


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tools_and_tool_messages_reach_the_generation() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    req = chat_request({"model": "m", "tools": [WEATHER_TOOL], "tool_choice": "required", "parallel_tool_calls": False,
                        "messages": [*HI, {"role": "assistant", "content": None, "tool_calls": [call]},
                                     {"role": "tool", "tool_call_id": "call_1", "content": "cold"}]})
    assert req.tools is not None and req.tools.choice == "required" and not req.tools.parallel
    assert req.tools.tools[0].name == "get_weather" and req.sampling()["tools"] is req.tools
    assert req.prompt[1:] == [{"role": "assistant", "content": "", "tool_calls": [call]},
                              {"role": "tool", "content": "cold", "tool_call_id": "call_1"}]


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [WEATHER_TOOL] * 129}, "tools"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER_TOOL], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}]},
     "messages.0.tool_calls.0.function.arguments"),
])
def test_bad_tools_are_refused_naming_the_parameter(fields: dict, param: str) -> None:
    error = refusal(chat_request, {"model": "m", "messages": HI, **fields})
    assert error.param == param and error.code == "invalid_value"
