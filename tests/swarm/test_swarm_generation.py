"""Generation through 3 real node processes equals local generation, token for token (float32)."""

from __future__ import annotations

import json

from shards.generation import encode_prompt
from tests.cli_call import run_cli

PROMPT = "What is the capital of France?"


def test_greedy_through_three_nodes_equals_local(remote_model, local_model):
    swarm = remote_model.generate(PROMPT, 48, ignore_eos=True)
    local = local_model.generate(PROMPT, 48, ignore_eos=True)
    assert swarm.token_ids == local.token_ids
    assert swarm.text.startswith("The capital of France is Paris.")
    assert [hop["blocks"] for hop in swarm.extra["chain"]] == [[0, 10], [10, 20], [20, 30]]


def test_stream_yields_tokens_as_generated(remote_model):
    events = list(remote_model.stream(PROMPT, 16))
    assert "".join(e.text for e in events) == "The capital of France is Paris."
    assert len([e for e in events if e.token_id is not None]) == 7


def test_two_turn_chat_reuses_node_caches_and_matches_local(remote_model, local_model):
    turn1 = [{"role": "user", "content": PROMPT}]
    with remote_model.inference_session(max_length=256) as chat:
        first = chat.generate(turn1, 32)
        conversation = turn1 + [{"role": "assistant", "content": first.text},
                                {"role": "user", "content": "And of Germany?"}]
        second = chat.generate(conversation, 32)
        sent = [span.tokens for span in chat.runner.spans]
    ids2 = encode_prompt(local_model.tokenizer, conversation)
    # Every node received each token once over both turns: the second turn sent only the new suffix
    # (generated tokens are fed back one by one; the final EOS never is).
    assert second.finish_reason == "stop"
    assert sent == [len(ids2) + len(second.token_ids)] * 3
    assert second.token_ids == local_model.generate(conversation, 32).token_ids
    assert "Berlin" in second.text
    assert first.extra["session"] == second.extra["session"]  # inside a session, extra names it and its chain
    assert [hop["blocks"] for hop in second.extra["chain"]] == [[0, 10], [10, 20], [20, 30]]


def test_cli_generate_through_the_swarm(swarm3, tmp_path, capsys):
    proc = run_cli(["generate", "--json", "--identity", str(tmp_path / "id.key"), "--ledger",
                    str(tmp_path / "client.sqlite"), "--peers", *swarm3.initial_peers, PROMPT], capsys)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"] == "The capital of France is Paris."
    assert len(out["chain"]) == 3


def test_swarm_json_lists_every_node(swarm3):
    state = json.loads((swarm3.state_dir / "swarm.json").read_text())
    assert state["initial_peers"] == swarm3.initial_peers
    assert sorted(tuple(n["blocks"]) for n in state["nodes"]) == [(0, 10), (10, 20), (20, 30)]
    assert all(n["pid"] > 0 and n["peer_id"].startswith("12D3KooW") for n in state["nodes"])
