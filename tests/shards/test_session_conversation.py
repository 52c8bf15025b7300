"""A chat session keeps the conversation: turn 2 may send only its new message (the README's example)."""

from __future__ import annotations

TURN1, TURN2 = "Hi! My name is Ana.", "What's my name?"


def test_turn_two_given_alone_continues_the_conversation(local_model):
    with local_model.inference_session(max_length=512) as chat:
        first = chat.generate(TURN1, 24)
        second = chat.generate(TURN2, 24)
        conversation = chat.conversation
    whole = [{"role": "user", "content": TURN1}, {"role": "assistant", "content": first.text},
             {"role": "user", "content": TURN2}]
    assert conversation == [*whole, {"role": "assistant", "content": second.text}]
    assert second.token_ids == local_model.generate(whole, 24).token_ids
    assert "Ana" in second.text and "Ana" not in local_model.generate(TURN2, 24).text  # remembered, not guessed


def test_resending_the_whole_chat_is_not_a_new_turn(local_model):
    with local_model.inference_session(max_length=512) as chat:
        first = chat.generate(TURN1, 24)
        whole = [{"role": "user", "content": TURN1}, {"role": "assistant", "content": first.text},
                 {"role": "user", "content": TURN2}]
        second = chat.generate(whole, 24)
        assert chat.conversation == [*whole, {"role": "assistant", "content": second.text}]


def test_an_answer_cut_short_by_the_reader_still_joins_the_chat(local_model):
    with local_model.inference_session(max_length=512) as chat:
        stream = chat.stream(TURN1, 24)
        text = "".join(next(stream).text for _ in range(3))
        stream.close()
        assert chat.conversation == [{"role": "user", "content": TURN1}, {"role": "assistant", "content": text}]


def test_raw_text_and_token_ids_are_no_chat(local_model):
    with local_model.inference_session(max_length=512) as chat:
        chat.generate("The capital of France is", 4, raw=True)
        chat.generate([504, 3575], 4)
        assert chat.conversation == []
