"""Tool calling on the default model: the grammar lets through exactly calls whose arguments follow the
tool's schema (and, under `auto`, text instead), the reader splits streamed answers into content and
calls, the prompt shows tools, calls and results (the template's way or the fallback), and bad
tools are refused naming the parameter."""

from __future__ import annotations

import argparse
import json

import jsonschema
import pytest
from transformers import AutoTokenizer

from shards.constrained import JsonConstraint
from shards.generation import encode_prompt
from shards.tool_calls import (MAX_TOOLS, CallArguments, CallBegun, Content, ToolError, call_text, read_answer,
                               renders_tools, tool_spec)
from swarmlm.generate import register, run_generation

WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALLED = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}]
PARIS = call_text("get_weather", {"city": "Paris", "unit": "celsius"})


def accepts(local_model, spec, text: str) -> bool:
    constraint = JsonConstraint(spec.grammar(), local_model.tokenizer, local_model.config.vocab_size,
                                sorted(local_model.eos_ids))
    ids = local_model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return constraint.valid_prefix(ids) == len(ids)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}, "auto"])
def test_grammar_lets_through_only_calls_that_follow_the_schema(local_model, choice):
    spec = tool_spec(TOOLS, choice)
    assert accepts(local_model, spec, PARIS)
    assert not accepts(local_model, spec, call_text("get_weather", {"city": "Paris"}))  # 'unit' is required
    assert not accepts(local_model, spec, call_text("get_weather", {"city": "Paris", "unit": "kelvin"}))
    assert not accepts(local_model, spec, call_text("send_mail", {}))
    assert not accepts(local_model, spec, '<tool_call>\n{"name": "get_weather",\n')  # compact JSON only
    assert accepts(local_model, spec, "It is sunny.") == (choice == "auto")  # text only when the model may choose


def test_named_choice_and_parallel_calls(local_model):
    assert not accepts(local_model, tool_spec(TOOLS, {"type": "function", "function": {"name": "get_time"}}), PARIS)
    two = PARIS + "\n" + call_text("get_time", {"city": "Rome"})
    assert accepts(local_model, tool_spec(TOOLS, "required"), two)
    assert not accepts(local_model, tool_spec(TOOLS, "required", parallel_tool_calls=False), two)


def test_auto_text_may_be_the_response_formats_json(local_model):
    spec = tool_spec(TOOLS, "auto", response_format={"type": "json_object"})
    constraint = JsonConstraint(spec.grammar({"type": "json_object"}), local_model.tokenizer,
                                local_model.config.vocab_size, sorted(local_model.eos_ids))
    for text, ok in [('{"answer": 1}', True), ("plain words", False), (PARIS, True)]:
        ids = local_model.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert (constraint.valid_prefix(ids) == len(ids)) == ok, text


def test_reader_splits_a_streamed_answer_into_calls():
    text = PARIS + "\n" + call_text("get_time", {"city": "Rome {x}\\n"})
    whole = read_answer(text)
    assert [(c.name, json.loads(c.arguments)) for c in whole.calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"city": "Rome {x}\\n"})]
    assert whole.content == "" and whole.finish_reason("stop") == "tool_calls"
    reader = read_answer("")
    deltas = [d for ch in text for d in reader.push(ch)] + reader.finish()  # one character at a time
    assert [d.name for d in deltas if isinstance(d, CallBegun)] == ["get_weather", "get_time"]
    for i, call in enumerate(whole.calls):
        assert "".join(d.text for d in deltas if isinstance(d, CallArguments) and d.index == i) == call.arguments
    assert not any(isinstance(d, Content) for d in deltas)


@pytest.mark.parametrize("text", ["<to", "<tool_call> is a tag", "Sunny", ""])
def test_reader_gives_back_text_that_is_no_call(text):
    reader = read_answer("")
    deltas = [d for ch in text for d in reader.push(ch)] + reader.finish()
    assert "".join(d.text for d in deltas if isinstance(d, Content)) == text and not reader.calls


def test_a_call_cut_short_keeps_its_arguments_so_far():
    reader = read_answer(PARIS[:-20])
    assert reader.calls[0].arguments == '{"city": "Paris", "unit": "cel' and reader.finish_reason("length") == "length"


def test_fallback_prompt_shows_tools_calls_and_results(local_model):
    tokenizer = local_model.tokenizer
    assert not renders_tools(tokenizer)  # SmolLM2's template ignores tools
    text = tokenizer.decode(encode_prompt(tokenizer, CALLED, tools=TOOLS))
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert PARIS + "<|im_end|>" in text
    assert '<|im_start|>user\n<tool_response>\n{"temperature": 21}\n</tool_response><|im_end|>' in text
    plain = encode_prompt(tokenizer, ASK)
    assert encode_prompt(tokenizer, ASK, tools=None) == plain  # no tools: the template as before


def test_a_template_that_renders_tools_gets_them(default_store):
    tokenizer = AutoTokenizer.from_pretrained(default_store.path / "tokenizer")
    tokenizer.chat_template = (  # the shape of Qwen2.5's: tools as JSON, calls with arguments as objects
        "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}"
        "{% for m in messages %}{{ m.role }}: {{ m.content }}"
        "{% for c in m.tool_calls or [] %}CALL {{ c.function.name }} {{ c.function.arguments.city }}{% endfor %}\n"
        "{% endfor %}assistant:")
    assert renders_tools(tokenizer)
    text = tokenizer.decode(encode_prompt(tokenizer, CALLED, tools=TOOLS))
    assert text.startswith("TOOLS:get_weather;get_time;") and "CALL get_weather Paris" in text
    assert 'tool: {"temperature": 21}' in text


@pytest.mark.parametrize("tools,choice,param", [
    ("get_weather", None, "tools"),
    ([{"type": "retrieval"}], None, "tools[0]"),
    ([{"type": "function", "function": {"name": "has space"}}], None, "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}], None,
     "tools[0].function.parameters"),
    ([TOOLS[0], TOOLS[0]], None, "tools[1].function.name"),
    ([TOOLS[0]] * (MAX_TOOLS + 1), None, "tools"),
    ([{"type": "function", "function": {"name": "f", "description": "x" * 5000}}], None, "tools"),
    (TOOLS, "sometimes", "tool_choice"),
    (TOOLS, {"type": "function", "function": {"name": "send_mail"}}, "tool_choice"),
    (None, "required", "tool_choice"),
])
def test_bad_tools_are_refused_naming_the_parameter(tools, choice, param):
    with pytest.raises(ToolError) as caught:
        tool_spec(tools, choice)
    assert caught.value.param == param


def test_a_named_call_validates_and_the_chat_goes_on(local_model):
    with local_model.inference_session(512) as session:
        result = session.generate(ASK, 40, tools=TOOLS,
                                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
        assert result.finish_reason == "tool_calls"
        [call] = result.tool_calls
        assert call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
        jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
        assert session.conversation[-1] == {"role": "assistant", "content": None, "tool_calls": [call]}
        answer = session.generate([{"role": "tool", "tool_call_id": call["id"], "content": "21 C, sunny"}], 12,
                                  tools=TOOLS, tool_choice="none")
        assert answer.tool_calls is None and answer.text


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "streamed"])
def test_the_cli_takes_a_tools_file(local_model, tmp_path, capsys, as_json):
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["generate", "--local", "--max-new-tokens", "40", "--tools", str(tmp_path / "tools.json"),
                              "--tool-choice", "get_time", *["--json"] * as_json, ASK[0]["content"]])
    assert run_generation(local_model, args) == 0
    out = capsys.readouterr().out
    if as_json:
        [call] = json.loads(out)["tool_calls"]
        assert call["function"]["name"] == "get_time" and json.loads(call["function"]["arguments"])["city"]
    else:  # the answer as the model writes it, then the call
        assert out.startswith("<tool_call>") and out.splitlines()[-1].startswith("tool call call_")
        assert ": get_time({" in out.splitlines()[-1]


def test_the_responses_apis_flat_tools_are_taken_too():
    flat = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
            "parameters": WEATHER, "strict": True}
    spec = tool_spec([flat], {"type": "function", "name": "get_weather"})
    assert spec.choice == "get_weather" and spec.prompt_tools() == [TOOLS[0]]


def test_openais_pydantic_function_tool_is_taken_as_it_comes():
    import openai
    from pydantic import BaseModel

    class GetWeather(BaseModel):
        city: str

    [tool] = tool_spec([openai.pydantic_function_tool(GetWeather)], "required").tools
    assert tool.name == "GetWeather" and tool.parameters["required"] == ["city"]
