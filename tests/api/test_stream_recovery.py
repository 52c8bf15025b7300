"""A stream whose only node of some blocks dies keeps talking while the gateway waits for nodes
(up to --recover-timeout): a replacement that joins in time finishes the answer, else an error event ends it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx
import pytest

from node.local_swarm import LocalSwarm
from tests.api.conftest import MODEL
from tests.api.gateway_process import run_gateway
from tests.conftest import log_tails

from swarmlm.api.keepalive import KEEPALIVE

LONG = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]
SECOND = (15, 30)  # the 2-node swarm's second half: its only node dies
RECOVER_S = 60  # room for a replacement node to start on a busy machine
GIVE_UP_S = 3  # no replacement comes: the shortest wait that still shows keepalives
KEEPALIVE_S = "0.5"


@pytest.fixture(scope="module")
def swarm(default_store, tmp_path_factory):
    with LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("recovery-swarm")) as swarm:
        swarm.start(2, default_store.manifest.num_blocks)
        yield swarm


def _gateway(swarm: LocalSwarm, state, recover_s: int):
    return run_gateway(swarm.initial_peers, state, args=["--recover-timeout", str(recover_s),
                                                         "--keepalive", KEEPALIVE_S])


@dataclass
class Stream:
    events: list[dict] = field(default_factory=list)
    keepalives_after_kill: int = 0
    done: bool = False
    seconds_to_end_after_kill: float = 0.0


def _stream_killing_the_second(swarm: LocalSwarm, gateway, max_tokens: int, respawn: bool) -> Stream:
    """Stream an answer; after its first token, SIGKILL the only node of SECOND (and start another one)."""
    body = {"model": MODEL, "messages": LONG, "temperature": 0, "max_tokens": max_tokens, "stream": True}
    out, killed_at = Stream(), 0.0
    with httpx.stream("POST", gateway.base_url + "/chat/completions", json=body, timeout=600) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line:
                continue
            if line == KEEPALIVE.decode().strip():
                out.keepalives_after_kill += bool(killed_at)
            elif line == "data: [DONE]":
                out.done = True
            else:
                out.events.append(json.loads(line.removeprefix("data: ")))
            if len(out.events) == 2 and not killed_at:
                [victim] = [n for n in swarm.nodes if n.blocks == SECOND]
                swarm.kill(victim)
                killed_at = time.monotonic()
                if respawn:  # from this thread: a node dies with the thread that started it
                    swarm.nodes.append(swarm.spawn_node(SECOND, wait=False))
    out.seconds_to_end_after_kill = time.monotonic() - killed_at
    return out


def test_a_replacement_within_the_timeout_finishes_the_answer_exactly(swarm, tmp_path, local_model):
    with _gateway(swarm, tmp_path, RECOVER_S) as gateway:
        stream = _stream_killing_the_second(swarm, gateway, 48, respawn=True)
    assert stream.done and not any("error" in e for e in stream.events), log_tails(swarm)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in stream.events)
    assert text == local_model.generate(LONG, 48).text  # greedy: replayed onto the new node, same tokens
    assert stream.events[-1]["swarmlm"]["failovers"] >= 1
    assert stream.keepalives_after_kill >= 1  # the wait for the new node was not silent
    print(f"recovered: answer complete {stream.seconds_to_end_after_kill:.1f}s after the kill")


def test_no_replacement_ends_the_stream_with_an_error_event_after_the_timeout(swarm, tmp_path):
    with _gateway(swarm, tmp_path, GIVE_UP_S) as gateway:
        stream = _stream_killing_the_second(swarm, gateway, 300, respawn=False)
    assert stream.done
    error = stream.events[-1]["error"]
    assert error["code"] in ("no_route", "swarm_failure") and error["type"] in ("service_unavailable", "swarm_error")
    assert stream.keepalives_after_kill >= 1
    print(f"gave up: error event {stream.seconds_to_end_after_kill:.1f}s after the kill (--recover-timeout "
          f"{GIVE_UP_S})")
