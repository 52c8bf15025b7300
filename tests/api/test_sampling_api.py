"""The gateway's sampling features, in-process: the ASGI app over the default model's blocks in this
process (a swarm cannot run in these tests), answers compared with the SDK's own, which
tests/shards/test_sampling_rules.py checks against reference computations."""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.testclient import TestClient

from shards.generation import Session
from shards.served import ServedBy
from swarmlm.api.app import create_app
from swarmlm.api.gateway import Gateway, ServedModel
from swarmlm.api.settings import resolve

QUESTION = [{"role": "user", "content": "Name three colours."}]


class NamedRunner:
    """A local runner that names its session, as a swarm session's runner does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def forward(self, hidden, start):
        return self.inner.forward(hidden, start)

    async def aforward(self, hidden, start):
        return await self.inner.aforward(hidden, start)

    def close(self, length=None):
        self.inner.close(length)

    async def aclose(self, length=None):
        await self.inner.aclose(length)

    def served(self) -> ServedBy:
        return ServedBy("in-process", ())


class InProcessRemote:
    """Stands in for `RemoteModel`: the same head, tokenizer and generation loop, blocks in this process."""

    def __init__(self, local) -> None:
        self.local, self.tokenizer, self.config, self.store = local, local.tokenizer, local.config, local.store
        self.root = local.manifest.root
        self.client = SimpleNamespace(peer_id="in-process-client")

    def inference_session(self, max_length: int) -> Session:
        session = self.local.inference_session(max_length)
        session.runner = NamedRunner(session.runner)
        return session


@pytest.fixture(scope="module")
def api(local_model):
    settings = resolve(argparse.Namespace(peers=["/ip4/127.0.0.1/tcp/1/p2p/unused"], allowed_host=["testserver"]),
                       {})
    gateway = Gateway([ServedModel("m", InProcessRemote(local_model), int(time.time()))], settings)  # type: ignore
    with TestClient(create_app(gateway)) as client:
        yield client


def post(api: TestClient, path: str, **body: Any) -> dict:
    reply = api.post(path, json={"model": "m", **body})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_chat_logprobs_are_the_sdks_in_openais_shape(api, local_model):
    body = post(api, "/v1/chat/completions", messages=QUESTION, temperature=0, max_tokens=6, logprobs=True,
                top_logprobs=3, repetition_penalty=1.3, presence_penalty=0.5)
    sdk = local_model.generate(QUESTION, 6, logprobs=3, repetition_penalty=1.3, presence_penalty=0.5)
    choice = body["choices"][0]
    assert choice["message"]["content"] == sdk.text
    content = choice["logprobs"]["content"]
    assert [c["logprob"] for c in content] == pytest.approx([lp.logprob for lp in sdk.logprobs], abs=1e-5)
    for entry, lp in zip(content, sdk.logprobs):
        assert entry["token"] == local_model.tokenizer.decode([lp.token_id])
        assert bytes(entry["bytes"]).decode(errors="replace") == entry["token"]
        assert [t["logprob"] for t in entry["top_logprobs"]] == pytest.approx([v for _, v in lp.top], abs=1e-5)
        assert len(entry["top_logprobs"]) == 3


def test_streamed_chat_logprobs_add_up_to_the_whole(api):
    fields = dict(messages=QUESTION, temperature=0, max_tokens=6, logprobs=True)
    whole = post(api, "/v1/chat/completions", **fields)["choices"][0]["logprobs"]["content"]
    with api.stream("POST", "/v1/chat/completions", json={"model": "m", "stream": True, **fields}) as reply:
        frames = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")]
    streamed = [c for f in frames if f["choices"] and f["choices"][0]["logprobs"]
                for c in f["choices"][0]["logprobs"]["content"]]
    assert streamed == whole


def test_completions_logprobs_take_the_legacy_shape(api, local_model):
    body = post(api, "/v1/completions", prompt="The sky is", temperature=0, max_tokens=5, logprobs=2)
    choice = body["choices"][0]
    sdk = local_model.generate("The sky is", 5, raw=True, logprobs=2)
    legacy = choice["logprobs"]
    assert legacy["token_logprobs"] == pytest.approx([lp.logprob for lp in sdk.logprobs], abs=1e-5)
    assert "".join(legacy["tokens"]) == choice["text"] == sdk.text
    assert legacy["text_offset"][0] == 0 and all(len(t) == 2 for t in legacy["top_logprobs"])


def test_n_seeded_answers_are_the_sdks_choices(api, local_model):
    fields = dict(temperature=1.0, top_k=20, min_p=0.05, seed=5, max_tokens=5)
    body = post(api, "/v1/chat/completions", messages=QUESTION, n=3, **fields)
    sdk = local_model.choices(QUESTION, 3, 5, temperature=1.0, top_k=20, min_p=0.05, seed=5)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == [g.text for g in sdk]
    assert body["usage"]["completion_tokens"] == sum(len(g.token_ids) for g in sdk)
    again = post(api, "/v1/chat/completions", messages=QUESTION, n=3, **fields)
    assert [c["message"]["content"] for c in again["choices"]] == [g.text for g in sdk]


def test_n_streamed_answers_each_end_with_a_finish_reason(api):
    fields = dict(messages=QUESTION, temperature=1.0, seed=2, max_tokens=4, n=2)
    whole = post(api, "/v1/chat/completions", **fields)["choices"]
    with api.stream("POST", "/v1/chat/completions", json={"model": "m", "stream": True, **fields}) as reply:
        frames = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")]
    for i in range(2):
        mine = [f["choices"][0] for f in frames if f["choices"][0]["index"] == i]
        assert "".join(c["delta"].get("content", "") for c in mine) == whole[i]["message"]["content"]
        assert mine[0]["delta"]["role"] == "assistant"
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == [whole[i]["finish_reason"]]


def test_top_k_is_honoured_not_dropped(api, local_model):
    body = post(api, "/v1/completions", prompt="Once upon a time", temperature=1.5, top_k=1, max_tokens=6)
    assert body["choices"][0]["text"] == local_model.generate("Once upon a time", 6, raw=True).text


def test_token_bytes_are_exact_where_a_character_spans_tokens(local_model):
    from swarmlm.api.logprobs import TokenText

    tokens = TokenText(local_model.tokenizer)
    text = "héllo “world” 日本"
    ids = local_model.tokenizer(text)["input_ids"]
    assert any("\ufffd" in tokens.text(t) for t in ids)  # some token holds part of a character
    assert bytes(b for t in ids for b in tokens.bytes(t)).decode() == text


def test_a_plain_stream_keeps_its_shape(api):
    body = {"model": "m", "messages": QUESTION, "temperature": 0, "max_tokens": 3, "stream": True}
    with api.stream("POST", "/v1/chat/completions", json=body) as reply:
        frames = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")]
    assert frames[0]["choices"][0] == {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                       "finish_reason": None}
    assert frames[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}


def test_the_official_client_parses_logprobs_and_n(api, local_model):
    from openai import OpenAI

    client = OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=api)
    chat = client.chat.completions.create(model="m", messages=QUESTION, temperature=0, max_tokens=4, n=2,
                                          logprobs=True, top_logprobs=2, frequency_penalty=0.5)
    sdk = local_model.generate(QUESTION, 4, logprobs=2, frequency_penalty=0.5)
    assert [c.message.content for c in chat.choices] == [sdk.text, sdk.text]  # greedy: both answers alike
    tokens = chat.choices[1].logprobs.content
    # n=2 computes a batch of two, whose float32 matmuls round apart from the SDK's batch of one
    # (1.8e-5 seen on one compute thread)
    assert [t.logprob for t in tokens] == pytest.approx([lp.logprob for lp in sdk.logprobs], abs=1e-4)
    assert all(len(t.top_logprobs) == 2 and t.bytes for t in tokens)
    text = client.completions.create(model="m", prompt="The sky is", temperature=0, max_tokens=3, logprobs=1,
                                     extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.2})
    assert text.choices[0].text == local_model.generate("The sky is", 3, raw=True, repetition_penalty=1.2).text
    assert len(text.choices[0].logprobs.token_logprobs) == 3


PERSON = [{"role": "user", "content": "Describe a fictional person as JSON with a name and an age."}]


def test_the_official_client_gets_structured_output(api, local_model):
    """json_schema through `create` and a pydantic model through `parse`: the SDK's constrained answers."""
    import jsonschema
    from openai import OpenAI
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    client = OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=api)
    schema = Person.model_json_schema() | {"additionalProperties": False}
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    chat = client.chat.completions.create(model="m", messages=PERSON, temperature=0, max_tokens=40,
                                          response_format=response_format)
    sdk = local_model.generate(PERSON, 40, response_format=response_format)
    assert chat.choices[0].message.content == sdk.text and chat.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(sdk.text), schema)
    parsed = client.chat.completions.parse(model="m", messages=PERSON, temperature=0.8, seed=5, max_tokens=40,
                                           response_format=Person)
    assert isinstance(parsed.choices[0].message.parsed, Person)
    fruits = [{"role": "user", "content": "List three fruits as a JSON object."}]
    stream = client.chat.completions.create(model="m", messages=fruits, temperature=0, max_tokens=40, stream=True,
                                            response_format={"type": "json_object"})
    assert isinstance(json.loads("".join(c.choices[0].delta.content or "" for c in stream if c.choices)), dict)


def test_a_schema_the_engine_cannot_follow_is_a_400(api):
    reply = api.post("/v1/chat/completions", json={"model": "m", "messages": PERSON, "response_format": {
        "type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "string", "pattern": "(?<=a)b"}}}})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "response_format" and "look-around" in error["message"]
