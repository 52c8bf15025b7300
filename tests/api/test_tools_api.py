"""Tool calling through the gateway, in-process (the app over the default model's blocks in this process,
as in test_sampling_api): calls in OpenAI's shape whose arguments follow the tool's schema, the same
calls streamed as OpenAI streams them, text when the model may choose or must not call, and a
follow-up turn with the tool's result."""

from __future__ import annotations

import json

import jsonschema

from tests.api.test_sampling_api import api, post  # noqa: F401  (the in-process gateway)

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"],
        "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": CITY}},
         {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
                                           "parameters": CITY}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather"}}
GREEDY = {"temperature": 0, "max_tokens": 40}


def streamed(api, **body) -> list[dict]:
    with api.stream("POST", "/v1/chat/completions", json={"model": "m", "stream": True, **body}) as reply:
        assert reply.status_code == 200
        return [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")]


def assembled(frames: list[dict]) -> list[dict]:
    """The calls as the openai client puts them together from the deltas."""
    calls: dict[int, dict] = {}
    for frame in frames:
        for delta in frame["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(delta["index"], {"function": {"arguments": ""}})
            for key in ("id", "type"):
                if key in delta:
                    call[key] = delta[key]
            call["function"]["name"] = delta["function"].get("name", call["function"].get("name"))
            call["function"]["arguments"] += delta["function"].get("arguments", "")
    return [calls[i] for i in sorted(calls)]


def test_a_named_call_comes_in_openais_shape(api):
    choice = post(api, "/v1/chat/completions", messages=ASK, tools=TOOLS, tool_choice=WEATHER, **GREEDY)["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), CITY)


def test_streamed_calls_add_up_to_the_whole(api):
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "required", **GREEDY}
    whole = post(api, "/v1/chat/completions", **body)["choices"][0]
    frames = streamed(api, **body)
    deltas = [d for f in frames for d in f["choices"][0]["delta"].get("tool_calls", [])]
    assert set(deltas[0]) == {"index", "id", "type", "function"} and deltas[0]["function"]["arguments"] == ""
    assert all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
               for d in deltas[1:] if "id" not in d)
    calls = assembled(frames)
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in whole["message"]["tool_calls"]]
    assert [f["choices"][0]["finish_reason"] for f in frames if f["choices"][0]["finish_reason"]] == [
        whole["finish_reason"]]
    assert not "".join(f["choices"][0]["delta"].get("content") or "" for f in frames)


def test_one_call_at_most_without_parallel_calls(api):
    body = post(api, "/v1/chat/completions", messages=ASK, tools=TOOLS, tool_choice="required",
                parallel_tool_calls=False, **GREEDY)
    assert len(body["choices"][0]["message"]["tool_calls"]) == 1


def test_auto_may_answer_in_text_and_none_is_plain_chat(api):
    hello = [{"role": "user", "content": "Hi! How are you today?"}]
    auto = post(api, "/v1/chat/completions", messages=hello, tools=TOOLS, **GREEDY)["choices"][0]
    assert auto["message"]["content"] and "tool_calls" not in auto["message"]
    assert auto["finish_reason"] in ("stop", "length")
    none = post(api, "/v1/chat/completions", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=8,
                temperature=0)
    plain = post(api, "/v1/chat/completions", messages=ASK, max_tokens=8, temperature=0)
    assert none["choices"][0]["message"] == plain["choices"][0]["message"]  # no tools in the prompt either


def test_a_follow_up_turn_reads_the_tools_result(api):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees and sunny"}]
    body = post(api, "/v1/chat/completions", messages=messages, tools=TOOLS, **GREEDY)
    assert body["usage"]["prompt_tokens"] > 100  # the tools, the call and its result are in the prompt
    assert body["choices"][0]["message"]["content"] or body["choices"][0]["message"].get("tool_calls")
