"""Server-sent events on the wire, byte by byte: what any SSE client (not only openai's) must parse."""

from __future__ import annotations

import json

import httpx

from tests.api.conftest import API_KEY, MODEL


def test_a_stream_is_data_frames_ending_in_done(gateway):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0, "max_tokens": 24, "stream": True}
    with httpx.stream("POST", gateway.base_url + "/chat/completions", json=body, timeout=300,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as reply:
        raw = b"".join(reply.iter_raw())
        headers = reply.headers
    assert reply.status_code == 200
    assert headers["content-type"].startswith("text/event-stream") and headers["cache-control"] == "no-cache"
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    events = [json.loads(f.removeprefix(b"data: ")) for f in frames[:-2]]
    assert all(f.startswith(b"data: {") and b"\n" not in f for f in frames[:-2])  # one line per event
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "The capital of France is Paris."
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert events[-1]["swarmlm"]["session_id"] == headers["x-swarmlm-session"]
    assert "usage" not in events[0]  # only with stream_options.include_usage
