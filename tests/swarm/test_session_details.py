"""Inside a session, every Generation names its swarm session and chain, as one-shot generations do."""

from __future__ import annotations


def test_each_turn_of_a_session_names_its_session_and_chain(remote_model):
    with remote_model.inference_session(max_length=256) as chat:
        first = chat.generate("Hi! My name is Ana.", 24)
        second = chat.generate("What's my name?", 24)
        session = chat.runner.session_id
    assert "Ana" in second.text  # the README's example: the session kept turn 1
    for turn in (first, second):
        assert turn.extra["session"] == session
        assert [hop["blocks"] for hop in turn.extra["chain"]] == [[0, 10], [10, 20], [20, 30]]
    assert second.extra["chain"][0]["tokens"] > first.extra["chain"][0]["tokens"]  # the chain so far, per turn


async def test_the_async_sdk_names_the_chain_in_public_fields_and_matches_the_blocking_answer(remote_model,
                                                                                             local_model):
    async with remote_model.inference_session(max_length=256) as chat:
        pieces = [e.text async for e in chat.astream("What is the capital of France?", 24)]
        served_while_open = chat.served
        second = await chat.agenerate("And of Italy?", 24)
    assert "".join(pieces) == local_model.generate("What is the capital of France?", 24).text
    served = second.served
    assert served is not None and served.session_id == served_while_open.session_id == second.extra["session"]
    assert [(link.start, link.end) for link in served.chain] == [(0, 10), (10, 20), (20, 30)]
    assert served.failovers == 0 and second.finish_reason == "stop"
    assert chat.served.chain[0].tokens >= served.chain[0].tokens  # closed: the receipted chain
