"""The response id names the swarm session, so provenance survives clients that drop unknown fields."""

from __future__ import annotations

from tests.api.conftest import MODEL

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_a_whole_answers_id_is_its_session(client):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, temperature=0,
                                                          max_tokens=8)
    completion = raw.parse()
    session = completion.model_extra["swarmlm"]["session_id"]
    assert completion.id == f"chatcmpl-{session}" and raw.headers["x-swarmlm-session"] == session
    text = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=4)
    assert text.id == f"cmpl-{text.model_extra['swarmlm']['session_id']}"


def test_every_streamed_chunk_carries_the_session_in_its_id(client):
    with client.chat.completions.with_streaming_response.create(model=MODEL, messages=QUESTION, temperature=0,
                                                                max_tokens=8, stream=True) as raw:
        session = raw.headers["x-swarmlm-session"]
        chunks = list(raw.parse())
    assert chunks and {c.id for c in chunks} == {f"chatcmpl-{session}"}
