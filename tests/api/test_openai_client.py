"""The official `openai` package against a real gateway over a real 3-node swarm."""

from __future__ import annotations

import asyncio

from shards.generation import encode_prompt
from tests.api.conftest import MODEL, serve_entry

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]


def _check_provenance(swarm3, provenance: dict, client_peer_id: str, num_blocks: int = 30) -> None:
    """The chain covers every block in order, and each of its nodes logged this session, receipted by us."""
    chain = provenance["chain"]
    assert [c["blocks"][0] for c in chain][0] == 0 and chain[-1]["blocks"][1] == num_blocks
    assert all(a["blocks"][1] == b["blocks"][0] for a, b in zip(chain, chain[1:]))
    ledgers = {n.peer_id: n.ledger for n in swarm3.nodes}
    for link in chain:
        entry = serve_entry(ledgers[link["peer_id"]], provenance["session_id"])
        assert list(entry.blocks) == link["blocks"] and entry.client == client_peer_id
        assert entry.manifest_root.hex() == provenance["model_root"]
        assert entry.receipt is not None and entry.receipt.client == client_peer_id


def test_models_list_and_retrieve_name_the_served_model_and_its_root(client, default_store):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.owned_by == "swarmlm"
    assert model.model_extra["swarmlm"]["model_root"] == default_store.root
    assert client.models.retrieve(default_store.root).id == MODEL  # the root names the model too


def test_chat_completion_equals_local_greedy_and_names_its_provenance(client, local_model, swarm3, default_store):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, temperature=0,
                                                          max_tokens=24)
    completion = raw.parse()
    local = local_model.generate(QUESTION, 24)
    assert completion.choices[0].message.content == local.text == "The capital of France is Paris."
    assert completion.choices[0].message.role == "assistant" and completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == local.prompt_tokens
    assert completion.usage.completion_tokens == len(local.token_ids)
    assert completion.usage.total_tokens == local.prompt_tokens + len(local.token_ids)
    provenance = completion.model_extra["swarmlm"]
    assert provenance["model_root"] == default_store.root == raw.headers["x-swarmlm-model-root"]
    assert raw.headers["x-swarmlm-session"] == provenance["session_id"]
    assert raw.headers["x-swarmlm-chain"] == ", ".join(
        f"{c['peer_id']}={c['blocks'][0]}:{c['blocks'][1]}" for c in provenance["chain"])
    _check_provenance(swarm3, provenance, raw.headers["x-swarmlm-client"])


def test_streamed_chat_completion_with_usage_matches_local_greedy(client, local_model, swarm3):
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24,
                                                 stream=True, stream_options={"include_usage": True}))
    local = local_model.generate(QUESTION, 24)
    choice_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert choice_chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in choice_chunks) == local.text
    assert [c.choices[0].finish_reason for c in choice_chunks] == [None] * (len(choice_chunks) - 1) + ["stop"]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == len(local.token_ids)
    assert usage_chunk.usage.prompt_tokens == local.prompt_tokens
    assert all(c.usage is None for c in choice_chunks)
    first, last = choice_chunks[0].model_extra["swarmlm"], choice_chunks[-1].model_extra["swarmlm"]
    assert first["session_id"] == last["session_id"]
    _check_provenance(swarm3, last, last["client_peer_id"])


def test_text_completion_continues_the_raw_prompt_like_local_greedy(client, local_model):
    prompt = "The capital of France is"
    completion = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=12)
    local = local_model.generate(prompt, 12, raw=True)
    assert completion.object == "text_completion" and completion.choices[0].text == local.text
    assert completion.choices[0].finish_reason == "length"  # 12 tokens, no end of text
    assert completion.usage.completion_tokens == 12 and completion.usage.prompt_tokens == local.prompt_tokens
    assert completion.model_extra["swarmlm"]["session_id"]


def test_seed_repeats_a_sample_and_stop_ends_the_text_before_it(client):
    def sample() -> str:
        return client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=1.2, top_p=0.95, seed=7,
                                              max_tokens=10).choices[0].message.content

    assert sample() == sample()
    stopped = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, stop=[" Paris"])
    assert stopped.choices[0].message.content == "The capital of France is"
    assert stopped.choices[0].finish_reason == "stop"


def test_structured_output_through_the_swarm_is_the_sdks(client, local_model):
    """response_format json_schema (create) and a pydantic model (parse): the answer validates and is the
    local model's constrained greedy answer, token for token through the chain."""
    from pydantic import BaseModel

    class City(BaseModel):
        city: str
        country: str

    schema = City.model_json_schema() | {"additionalProperties": False}
    response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    chat = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40,
                                          response_format=response_format)
    assert chat.choices[0].message.content == local_model.generate(QUESTION, 40, response_format=response_format).text
    assert chat.choices[0].finish_reason == "stop"
    parsed = client.chat.completions.parse(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40,
                                           response_format=City)
    assert parsed.choices[0].message.parsed == City.model_validate_json(chat.choices[0].message.content)


def test_tool_calls_through_the_swarm_are_the_sdks_and_the_chat_goes_on(client, local_model):
    """A named tool (openai's pydantic_function_tool, via parse): the call's arguments validate and are the
    local model's; then the tool's result as a `tool` message gets an answer."""
    import openai
    from pydantic import BaseModel

    class GetWeather(BaseModel):
        city: str

    tool = openai.pydantic_function_tool(GetWeather)
    named = {"type": "function", "function": {"name": "GetWeather"}}
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    chat = client.chat.completions.parse(model=MODEL, messages=ask, tools=[tool], tool_choice=named, temperature=0,
                                         max_tokens=40)
    [call] = chat.choices[0].message.tool_calls
    assert chat.choices[0].finish_reason == "tool_calls" and call.id.startswith("call_")
    assert isinstance(call.function.parsed_arguments, GetWeather)
    local = local_model.generate(ask, 40, tools=[tool], tool_choice=named)
    assert call.function.arguments == local.tool_calls[0]["function"]["arguments"]
    follow = [*ask, chat.choices[0].message.model_dump(include={"role", "content", "tool_calls"}),
              {"role": "tool", "tool_call_id": call.id, "content": "21 degrees and sunny"}]
    answer = client.chat.completions.create(model=MODEL, messages=follow, tools=[tool], tool_choice="none",
                                            temperature=0, max_tokens=16)
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls


def test_streamed_tool_calls_add_up_to_the_whole(client):
    """tool_choice required, streamed: the openai client's accumulated deltas are the whole answer's calls."""
    city = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}},
            "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
                                               "parameters": city, "strict": True}}]  # the stream helper wants strict
    ask = [{"role": "user", "content": "What time is it in Tokyo?"}]
    fields = {"model": MODEL, "messages": ask, "tools": tools, "tool_choice": "required", "parallel_tool_calls": False,
              "temperature": 0, "max_tokens": 40}
    whole = client.chat.completions.create(**fields).choices[0]
    with client.chat.completions.stream(**fields) as stream:
        final = stream.get_final_completion().choices[0]
    assert [c.function.model_dump(include={"name", "arguments"}) for c in final.message.tool_calls] == [
        c.function.model_dump(include={"name", "arguments"}) for c in whole.message.tool_calls]
    assert final.finish_reason == whole.finish_reason == "tool_calls"


def test_responses_create_and_stream_through_the_swarm(client, local_model):
    """client.responses: a streamed text answer is the local greedy one, and a function tool is called."""
    with client.responses.stream(model=MODEL, input="What is the capital of France?", temperature=0,
                                 max_output_tokens=24) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == local_model.generate(QUESTION, 24).text
    tools = [{"type": "function", "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    called = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=tools,
                                     tool_choice="required", parallel_tool_calls=False, temperature=0,
                                     max_output_tokens=60)
    [call] = called.output
    assert call.type == "function_call" and call.name == "get_weather" and called.id.startswith("resp_")


async def test_a_request_completes_while_another_streams_and_leaving_closes_that_session(async_client, local_model,
                                                                                        swarm3):
    """No global lock: a short answer completes while a long one is mid-stream. Then the long one's
    client leaves, and the gateway closes its session (receipted) long before its 1000 tokens (200
    could all be made on loaded cores while the short answer waited its turn)."""
    stream = await async_client.chat.completions.create(model=MODEL, messages=LONG, temperature=0, max_tokens=1000,
                                                        stream=True)
    chunks = aiter(stream)
    first = await anext(chunks)
    await anext(chunks)  # a token: the long generation is under way
    short = await async_client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    assert short.choices[0].message.content == local_model.generate(QUESTION, 24).text
    await anext(chunks)  # and it is still streaming now that the short answer is complete
    await stream.close()

    session = first.model_extra["swarmlm"]["session_id"]
    whole = len(encode_prompt(local_model.tokenizer, LONG)) + 999  # what 1000 tokens take through the chain
    for node in swarm3.nodes:
        entry = await asyncio.to_thread(serve_entry, node.ledger, session)
        assert entry.receipt is not None  # closed by the gateway, not timed out by the node
        assert entry.tokens < whole
