"""Errors reach the official client as its usual exception types, with OpenAI's status codes and shape."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.conftest import API_KEY, MODEL

QUESTION = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("create", ["chat", "completion"])
def test_an_unknown_model_is_a_404(client, create):
    with pytest.raises(openai.NotFoundError) as caught:
        if create == "chat":
            client.chat.completions.create(model="gpt-4o", messages=QUESTION)
        else:
            client.completions.create(model="gpt-4o", prompt="Hi")
    assert caught.value.status_code == 404 and caught.value.code == "model_not_found"
    assert MODEL in caught.value.message  # says which models exist


@pytest.mark.parametrize("params, param", [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 17}, "n"),  # answers share one prefill, up to 16
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "Hi"}]}, "messages.0.role"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 9000}, "messages"),  # past the model's 8192-token context
    ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "tools[0].function.name"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),  # chat allows 20 alternatives
    ({"top_logprobs": 2}, "top_logprobs"),  # alternatives without logprobs
    ({"frequency_penalty": 2.5}, "frequency_penalty"),  # OpenAI's range is [-2, 2]
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_bad_parameters_are_a_400_naming_the_parameter(client, params, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{"model": MODEL, "messages": QUESTION, **params})
    assert caught.value.status_code == 400 and caught.value.param == param


def test_the_context_limit_is_explained(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=9000)
    assert caught.value.code == "context_length_exceeded" and "8192" in caught.value.message


def test_token_ids_outside_the_vocabulary_are_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[1, 2, 10**9], max_tokens=4)
    assert caught.value.param == "prompt"


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_a_missing_or_wrong_key_is_a_401(gateway, key):
    bare = openai.OpenAI(base_url=gateway.base_url, api_key=key or "unused", max_retries=0,
                         default_headers={} if key else {"Authorization": ""})
    with pytest.raises(openai.AuthenticationError) as caught:
        bare.chat.completions.create(model=MODEL, messages=QUESTION)
    assert caught.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        bare.models.list()
    dashboard = httpx.get(gateway.url + "/swarm/status")
    assert dashboard.status_code == 401 and dashboard.json()["error"]["type"] == "authentication_error"
    assert httpx.get(gateway.url + "/swarm/info").json()["auth_required"] is True  # so the page asks for it


def test_a_body_that_is_not_json_is_a_400_in_openai_shape(gateway):
    reply = httpx.post(gateway.base_url + "/chat/completions", content=b"{not json",
                       headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert reply.status_code == 400
    assert set(reply.json()["error"]) >= {"message", "type", "param", "code"}
    assert httpx.get(gateway.base_url + "/nowhere").json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("depth", [65, 900, 10_000, 1_000_000])
def test_a_body_nested_too_deep_is_a_400_not_a_500(gateway, depth):
    """JSON's parser recurses per level: 10,000 deep raised RecursionError, a 500 (found by the fuzzer)."""
    body = b'{"model": "x", "prompt": ' + b"[" * depth + b"]" * depth + b"}"
    reply = httpx.post(gateway.base_url + "/completions", content=body, timeout=60,
                       headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "too_deep"


def test_a_body_over_the_cap_is_a_413_whether_sized_or_streamed(gateway):
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    big = b'{"model": "x", "prompt": "' + b"a" * (5 << 20) + b'"}'
    sized = httpx.post(gateway.base_url + "/completions", content=big, headers=headers, timeout=60)
    streamed = httpx.post(gateway.base_url + "/completions", headers=headers, timeout=60,
                          content=(big[i:i + (1 << 20)] for i in range(0, len(big), 1 << 20)))
    for reply in (sized, streamed):
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"


def test_a_prompt_that_fills_the_context_without_max_tokens_is_explained(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[1] * 8192)
    assert caught.value.code == "context_length_exceeded"


def test_the_ledger_explorer_dials_only_nodes_of_the_model(gateway):
    reply = httpx.get(gateway.url + f"/swarm/ledger/12D3KooWnotanode?model={MODEL}",
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "unknown_node"
