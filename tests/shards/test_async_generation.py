"""The asyncio API generates exactly what the blocking one does, and never runs torch on the event loop."""

from __future__ import annotations

import threading

import pytest

from shards.generation import Session

QUESTION = "What is the capital of France?"
COUNT = "Count from 1 to 20, separated by commas."


async def test_astream_and_agenerate_equal_the_blocking_calls(local_model):
    expected = local_model.generate(QUESTION, 16)
    events = [e async for e in local_model.astream(QUESTION, 16)]
    assert "".join(e.text for e in events) == expected.text
    assert [e.token_id for e in events if e.token_id is not None] == expected.token_ids
    result = await local_model.agenerate(QUESTION, 16)
    assert (result.text, result.finish_reason, result.served) == (expected.text, expected.finish_reason, None)


@pytest.mark.parametrize("options", [{"speculative": 3}, {"logprobs": 2, "repetition_penalty": 1.2},
                                     {"response_format": {"type": "json_object"}}])
async def test_every_feature_is_the_same_through_the_async_path(local_model, options):
    expected = local_model.generate(COUNT, 24, **options)
    result = await local_model.agenerate(COUNT, 24, **options)
    assert result.token_ids == expected.token_ids and result.text == expected.text
    assert result.logprobs == expected.logprobs


async def test_a_chat_session_keeps_the_conversation_and_a_reader_may_stop_early(local_model):
    async with local_model.inference_session(max_length=512) as chat:
        stream = chat.astream("Hi! My name is Ana.", 24)
        text = "".join([(await anext(stream)).text for _ in range(3)])
        await stream.aclose()
        assert chat.conversation == [{"role": "user", "content": "Hi! My name is Ana."},
                                     {"role": "assistant", "content": text}]


async def test_n_choices_are_the_blocking_ones(local_model):
    async with local_model.inference_session(max_length=512) as session:
        choices = [(i, e.token_id) async for i, e in session.astream_choices(QUESTION, 2, 4, temperature=1.0, seed=7)]
    with local_model.inference_session(max_length=512) as session:
        blocking = [(i, e.token_id) for i, e in session.stream_choices(QUESTION, 2, 4, temperature=1.0, seed=7)]
    assert choices == blocking and {i for i, _ in choices} == {0, 1}


async def test_the_event_loop_never_runs_the_models_compute(local_model, monkeypatch):
    expected = local_model.generate(QUESTION, 8, speculative=2)
    loop_thread = threading.current_thread()
    on_loop: list[int] = []
    advancing = Session._advancing

    def watched(self, ids, n, *step):  # embeddings and LM head run where this generator runs, blocks where sent
        if threading.current_thread() is loop_thread:
            on_loop.append(len(ids))
        return (yield from advancing(self, ids, n, *step))

    monkeypatch.setattr(Session, "_advancing", watched)
    result = await local_model.agenerate(QUESTION, 8, speculative=2)
    assert result.token_ids == expected.token_ids and not on_loop
