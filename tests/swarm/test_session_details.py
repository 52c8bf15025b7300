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
