"""POST /v1/responses in-process through the official openai client (the app of test_sampling_api as its
HTTP transport): text answers are the SDK's, previous_response_id continues the chat, function tools
are called and their outputs read, streams add up to the whole answer through the client's own
stream helper, and what is not supported is a 400 naming it."""

from __future__ import annotations

import json

import openai
import pytest

from swarmlm.api.responses_api import input_messages
from tests.api.test_sampling_api import api  # noqa: F401  (the in-process gateway)

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"],
        "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city", "parameters": CITY,
          "strict": True}]


@pytest.fixture
def client(api):  # noqa: F811
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=api, max_retries=0)


def test_text_answers_are_the_sdks_and_previous_response_id_continues(client, local_model):
    first = client.responses.create(model="m", input="My name is Ana.", instructions="Be brief.", temperature=0,
                                    max_output_tokens=12)
    chat = [{"role": "user", "content": "My name is Ana."}]
    local = local_model.generate([{"role": "system", "content": "Be brief."}, *chat], 12)
    assert first.id.startswith("resp_") and first.output_text == local.text
    assert first.usage.input_tokens == local.prompt_tokens and first.usage.output_tokens == len(local.token_ids)
    second = client.responses.create(model="m", input="What is my name?", previous_response_id=first.id,
                                     temperature=0, max_output_tokens=12)
    again = local_model.generate([*chat, {"role": "assistant", "content": local.text},
                                  {"role": "user", "content": "What is my name?"}], 12)
    assert second.output_text == again.text  # the instructions are not carried over, as OpenAI does


def test_only_the_client_that_got_a_response_may_continue_it(client, api):  # noqa: F811
    """Response ids name sessions the ledger shows to anyone: another key cannot read the chat through them."""
    first = client.responses.create(model="m", input="My secret is 42.", temperature=0, max_output_tokens=2)
    other = openai.OpenAI(base_url="http://testserver/v1", api_key="another", http_client=api, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="not found"):
        other.responses.create(model="m", input="What is my secret?", previous_response_id=first.id,
                               max_output_tokens=2)


def test_function_tools_are_called_and_their_outputs_read(client):
    called = client.responses.create(model="m", input="What is the weather in Paris?", tools=TOOLS,
                                     tool_choice={"type": "function", "name": "get_weather"}, temperature=0,
                                     max_output_tokens=40)
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and json.loads(call.arguments)["city"]
    follow = client.responses.create(model="m", previous_response_id=called.id, tools=TOOLS, tool_choice="none",
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "21 degrees and sunny"}], temperature=0, max_output_tokens=12)
    assert follow.output_text and follow.previous_response_id == called.id


def test_input_items_become_the_chat():
    items = [{"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
             {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": "cold"}]
    user, assistant, tool = input_messages(items)
    assert user == {"role": "user", "content": "weather?"}
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == ['{"city": "Oslo"}', '{"city": "Rome"}']
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "cold"}


@pytest.mark.parametrize("fields, param", [
    ({"previous_response_id": "resp_unknown"}, "previous_response_id"),
    ({"input": [{"type": "web_search_call"}]}, "input[0]"),
    ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].function.name"),
])
def test_what_is_not_supported_is_a_400_naming_it(client, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(**{"model": "m", "input": "Hi", **fields})
    assert caught.value.param == param


@pytest.mark.parametrize("fields", [
    {"input": "What is the capital of France?"},  # ends within the budget: the helper wants response.completed
    {"input": "What is the weather in Paris?", "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
     "max_output_tokens": 60},
], ids=["text", "function_call"])
def test_a_stream_adds_up_to_the_whole_answer(client, fields):
    fields = {"model": "m", "temperature": 0, "max_output_tokens": 30, **fields}
    whole = client.responses.create(**fields)
    with client.responses.stream(**fields) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == f"response.{whole.status}"
    assert final.output_text == whole.output_text and final.status == whole.status
    assert [(o.type, getattr(o, "name", None), getattr(o, "arguments", None)) for o in final.output] == [
        (o.type, getattr(o, "name", None), getattr(o, "arguments", None)) for o in whole.output]
    assert final.id.startswith("resp_") and final.usage.output_tokens == whole.usage.output_tokens
