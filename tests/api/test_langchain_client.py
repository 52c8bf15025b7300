"""A framework client nobody on the project wrote: LangChain's `ChatOpenAI` against the real gateway over
the shared 3-node swarm (the same `gateway` fixture as test_openai_client), answers compared with the
local model's greedy ones token for token where the request is the same."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import BaseModel, Field

from tests.api.conftest import API_KEY, MODEL

QUESTION = "What is the capital of France?"


class Capital(BaseModel):
    """The capital city of a country."""

    country: str = Field(max_length=30)
    city: str = Field(max_length=30)


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"21 degrees and sunny in {city}"


def chat_model(gateway, **options):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=gateway.base_url, api_key=API_KEY, temperature=0, max_retries=0,
                      timeout=300, **options)


def test_a_plain_chat_is_the_local_greedy_answer_and_names_its_session(gateway, local_model):
    reply = chat_model(gateway, max_tokens=24).invoke(QUESTION)
    local = local_model.generate(QUESTION, 24)
    assert reply.content == local.text == "The capital of France is Paris."
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["id"].startswith("chatcmpl-")  # the session, for a client that drops unknown fields
    assert reply.usage_metadata["output_tokens"] == len(local.token_ids)


def test_streaming_adds_up_to_the_local_greedy_answer(gateway, local_model):
    chunks = list(chat_model(gateway, max_tokens=24).stream(QUESTION))
    assert "".join(c.content for c in chunks) == local_model.generate(QUESTION, 24).text
    assert len(chunks) > 3  # token by token


def test_bind_tools_calls_the_named_tool_with_the_local_models_arguments(gateway, local_model):
    from langchain_core.messages import ToolMessage
    from langchain_core.utils.function_calling import convert_to_openai_tool

    model = chat_model(gateway, max_tokens=40)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = model.bind_tools([get_weather], tool_choice="get_weather").invoke(ask)
    [call] = called.tool_calls
    tool = convert_to_openai_tool(get_weather)
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    jsonschema.validate(call["args"], tool["function"]["parameters"])
    local = local_model.generate(ask, 40, tools=[tool], tool_choice={"type": "function",
                                                                     "function": {"name": "get_weather"}})
    assert call["args"] == json.loads(local.tool_calls[0]["function"]["arguments"])
    answer = model.bind_tools([get_weather], tool_choice="none").invoke(
        [*ask, called, ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])])
    assert answer.content and not answer.tool_calls


def test_with_structured_output_returns_a_validated_object(gateway):
    structured = chat_model(gateway, max_tokens=40).with_structured_output(Capital, include_raw=True)
    result = structured.invoke("What is the capital of France? Answer in JSON.")
    assert result["parsing_error"] is None and isinstance(result["parsed"], Capital)
    assert result["parsed"] == Capital.model_validate_json(result["raw"].content)
    assert result["raw"].response_metadata["finish_reason"] == "stop"


def test_the_responses_api_answers_like_chat_completions(gateway, local_model):
    model = chat_model(gateway, max_tokens=24, use_responses_api=True)
    reply = model.invoke(QUESTION)
    assert reply.text == local_model.generate(QUESTION, 24).text
    assert reply.response_metadata["id"].startswith("resp_")
    streamed = list(model.stream(QUESTION))
    assert "".join(c.text for c in streamed) == reply.text


@pytest.mark.parametrize("use_responses_api", [False, True])
def test_a_tool_call_and_its_result_through_either_api(gateway, use_responses_api):
    from langchain_core.messages import HumanMessage, ToolMessage

    model = chat_model(gateway, max_tokens=40, use_responses_api=use_responses_api)
    ask = [HumanMessage("What is the weather in Paris?")]
    called = model.bind_tools([get_weather], tool_choice="any").invoke(ask)
    [call] = called.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)
    answer = model.invoke([*ask, called, ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])])
    assert answer.text
