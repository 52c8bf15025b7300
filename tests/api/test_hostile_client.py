"""A hostile HTTP client against a real `swarmlm api` process: slowloris, a flood that fills the queue,
streams nobody reads, 100k-token prompts, clients leaving mid-stream. Each attack ends with an honest client (another address, 127.0.0.2) getting the
same text as without the attack; its latency attacked vs not is printed (-s), not asserted."""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Iterator

import httpx
import pytest

from tests.api.gateway_process import GatewayProcess, run_gateway
from tests.hostile.attacker import metrics
from tests.waiting import until

MODEL = "smollm2-135m-instruct"
HEAD_TIMEOUT_S = 3
SEND_TIMEOUT_S = 2
MAX_CONNECTIONS = 64
PER_CLIENT = 16  # connections from one address
MAX_QUEUE = 8
HONEST = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
ENDLESS = {"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 3000, "temperature": 0,
           "stream": True}
LONG = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def gateway(swarm3, tmp_path_factory) -> Iterator[GatewayProcess]:
    """Keyless, 4 workers (2 per client), a short queue, a short head deadline and a small connection cap."""
    args = ["--max-concurrency", "4", "--max-queue", str(MAX_QUEUE), "--head-timeout", str(HEAD_TIMEOUT_S),
            "--body-timeout", "3", "--send-timeout", str(SEND_TIMEOUT_S), "--max-connections", str(MAX_CONNECTIONS),
            "--max-client-connections", str(PER_CLIENT)]
    with run_gateway(swarm3.initial_peers, tmp_path_factory.mktemp("hostile-gateway"), args=args) as gw:
        yield gw


def _port(gw: GatewayProcess) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def _honest(gw: GatewayProcess, address: str = "127.0.0.2") -> tuple[str, float]:
    """A 4-token greedy completion (by default from another address than the attacker's), its text and time."""
    transport = httpx.HTTPTransport(local_address=address)
    started = time.monotonic()
    with httpx.Client(transport=transport, timeout=120) as client:
        r = client.post(gw.base_url + "/completions", json=HONEST)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"], time.monotonic() - started


def _connect(gw: GatewayProcess, receive_buffer: int | None = None, address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", _port(gw)))
    return sock


def _post(gw: GatewayProcess, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{_port(gw)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def _closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    """True if the server closes the socket within wait_s (whatever it said first)."""
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return False
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
    return False


def _half_heads(gw: GatewayProcess, n: int, address: str, stack: ExitStack) -> list[socket.socket]:
    """n connections from `address`, each sending half a request line and nothing more."""
    socks = [stack.enter_context(_connect(gw, address=address)) for _ in range(n)]
    for s in socks:
        try:
            s.sendall(b"GET /v1/mod")
        except ConnectionResetError:  # refused at once already
            pass
    return socks


def _answered(socks: list[socket.socket], wait_s: float) -> list[socket.socket]:
    """Those the gateway answered (a refusal: these connections sent no full request) within wait_s."""
    time.sleep(wait_s)
    return select.select(socks, [], [], 0)[0]


def test_slowloris_from_one_address_leaves_connections_for_others_and_is_closed_at_the_head_deadline(gateway):
    text, calm_s = _honest(gateway)
    with ExitStack() as stack:
        slow = _half_heads(gateway, 80, "127.0.0.1", stack)
        refused = _answered(slow, 0.5)
        assert len(refused) >= 80 - PER_CLIENT, f"only {len(refused)} over the address's share closed at once"
        attacked_text, attacked_s = _honest(gateway)  # another address: its share of connections is intact
        assert all(_closed_by_server(s, HEAD_TIMEOUT_S + 5) for s in slow)
    assert attacked_text == text
    print(f"\nslowloris: honest 4-token completion {calm_s:.2f}s calm, {attacked_s:.2f}s while one address "
          f"held {80 - len(refused)} half-sent heads ({len(refused)} more closed at once)")


def test_connections_over_the_cap_are_closed_at_once_and_the_rest_at_the_head_deadline(gateway) -> None:
    """Many addresses fill the cap: one more connection gets a 503 at once; the head deadline frees them all."""
    text, calm_s = _honest(gateway)
    with ExitStack() as stack:
        held = [s for i in range(MAX_CONNECTIONS // PER_CLIENT)
                for s in _half_heads(gateway, PER_CLIENT, f"127.0.1.{i + 1}", stack)]
        over = _half_heads(gateway, 4, "127.0.2.1", stack)
        assert len(_answered(over, 1.0)) == len(over)
        assert all(_closed_by_server(s, HEAD_TIMEOUT_S + 5) for s in held)
        after_text, after_s = _honest(gateway)
    assert after_text == text
    print(f"\nconnection cap: honest 4-token completion {calm_s:.2f}s calm, {after_s:.2f}s right after "
          f"{len(held)} half-sent heads from {MAX_CONNECTIONS // PER_CLIENT} addresses were closed")


def _answers(flood: list[socket.socket], wait_s: float) -> dict[socket.socket, str]:
    """The response heads that came within wait_s (the rest are still waiting for a worker)."""
    heads: dict[socket.socket, str] = {}
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0 and len(heads) < len(flood):
        for s in select.select([s for s in flood if s not in heads], [], [], left)[0]:
            heads[s] = s.recv(65536).decode(errors="replace").partition("\r\n\r\n")[0]
    return heads


def test_a_flood_of_unread_streams_gets_429s_and_does_not_stop_another_client(gateway) -> None:
    """12 streams nobody reads from one address, 4 workers (2 per client), a queue of 8: 2 run, 8 wait,
    2 are refused; another client is served meanwhile, and the flood's address once it has gone."""
    text, calm_s = _honest(gateway)
    with ExitStack() as stack:
        flood = [stack.enter_context(_connect(gateway)) for _ in range(12)]
        for s in flood:
            s.sendall(_post(gateway, LONG))
        heads = _answers(flood, 10)
        refused = [h for h in heads.values() if h.startswith("HTTP/1.1 429")]
        assert len(refused) == 12 - 2 - MAX_QUEUE, heads.values()
        retry_after = [line.split(":", 1)[1] for line in refused[0].split("\r\n")
                       if line.lower().startswith("retry-after:")]
        assert retry_after and int(retry_after[0]) >= 1, refused[0]
        attacked_text, attacked_s = _honest(gateway)
    after_text, after_s = _honest(gateway, "127.0.0.1")  # the flood's sockets closed: its generations stopped
    assert attacked_text == text == after_text
    print(f"\nunread streams: honest 4-token completion {calm_s:.2f}s calm, {attacked_s:.2f}s while 12 unread "
          f"streams from one address ran or waited ({len(refused)} got 429), {after_s:.2f}s from that address after")


def test_a_body_that_stops_coming_gets_408_and_the_connection_closed(gateway) -> None:
    with _connect(gateway) as s:
        s.sendall(_post(gateway, HONEST)[:-10])  # the head and all but 10 bytes of the body
        assert select.select([s], [], [], 3 + 10)[0], "no answer after the body deadline"
        assert s.recv(65536).startswith(b"HTTP/1.1 408")
        assert _closed_by_server(s, 5)


def test_a_client_leaving_mid_body_is_not_an_error_in_the_log(gateway) -> None:
    """Starlette raises ClientDisconnect while the body is read: it was logged as an unhandled
    traceback (found by the fuzzer)."""
    with _connect(gateway) as s:
        s.sendall(_post(gateway, HONEST)[:-10])
        time.sleep(0.5)
    _honest(gateway)  # after the one that left, so its traces would be in the log by now
    assert "ClientDisconnect" not in gateway.log.read_text(errors="replace")


def test_streams_nobody_reads_stop_generating_and_give_their_workers_back(gateway) -> None:
    """Two 3000-token streams whose client reads nothing hold this address's 2 workers; once the buffers
    are full, the send deadline (SEND_TIMEOUT_S) ends them, so two requests from the same address, which need both
    workers, are answered long before 3000 tokens could have been generated."""
    text, calm_s = _honest(gateway, "127.0.0.1")
    with ExitStack() as stack:
        unread = [stack.enter_context(_connect(gateway, receive_buffer=4096)) for _ in range(2)]
        for s in unread:
            s.sendall(_post(gateway, ENDLESS))
        time.sleep(2)
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: _honest(gateway, "127.0.0.1"), range(2)))
        for s in unread:  # closed unread: reading them would let a stream that was not ended go on
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert [a[0] for a in answers] == [text, text]
    print(f"\nstalled readers: a 4-token completion from their address {calm_s:.2f}s calm, "
          f"{max(a[1] for a in answers):.2f}s for two at once behind 2 unread 3000-token streams (the time "
          f"their buffers took to fill, plus the {SEND_TIMEOUT_S} s deadline)")


HUGE_TEXT = "hello " * 100_000  # 100,000 tokens of text, 600 KB: far past the 8,192-token context
HUGE = [{"model": MODEL, "prompt": HUGE_TEXT, "max_tokens": 4},
        {"model": MODEL, "prompt": [1] * 100_000, "max_tokens": 4},
        {"model": MODEL, "prompt": HUGE_TEXT},
        {"model": MODEL, "messages": [{"role": "user", "content": HUGE_TEXT}], "max_tokens": 4}]


def test_hundred_thousand_token_prompts_are_refused_and_another_client_is_served_meanwhile(gateway) -> None:
    """Twelve 100k-token prompts at once (text, token ids, chat; with and without max_tokens): each is a
    400 `context_length_exceeded` (tokenizing runs off the event loop, so the gateway keeps answering),
    and another client gets the same text as without them."""
    text, calm_s = _honest(gateway)

    def huge(i: int) -> tuple[int, str]:
        path = "/chat/completions" if "messages" in HUGE[i % 4] else "/completions"
        with httpx.Client(timeout=300) as client:
            r = client.post(gateway.base_url + path, json=HUGE[i % 4])
        return r.status_code, r.json()["error"]["code"]

    with ThreadPoolExecutor(12) as pool:
        refused = pool.map(huge, range(12))
        attacked_text, attacked_s = _honest(gateway)
        refused = list(refused)
    assert refused == [(400, "context_length_exceeded")] * 12
    assert attacked_text == text
    print(f"\n100k-token prompts: honest 4-token completion {calm_s:.2f}s calm, {attacked_s:.2f}s while 12 "
          "prompts of 100,000 tokens were tokenized and refused")


def _quiet(nodes: list, idle: list[dict[str, float]], keys: tuple[str, ...]) -> list[dict[str, float]]:
    """The nodes' `keys` once they are back at `idle` (sessions closed, cache given back); polled."""
    return until(lambda: [{k: metrics(n)[k] for k in keys} for n in nodes], lambda now: now == idle, timeout=120,
                 interval=1)


def test_clients_leaving_mid_stream_under_load_free_their_sessions_pages_and_workers(gateway, swarm3) -> None:
    """Sixteen clients (16 addresses) each start a 200-token stream, read until it is generating or
    queued, and vanish (a reset, not a close): the gateway's 4 workers were all busy and 8 queued.
    Afterwards every node is back to its idle sessions and cache, and four requests at once (all
    four workers) get the same text as before."""
    keys = ("swarmlm_active_sessions", "swarmlm_cache_tokens_used")
    text, calm_s = _honest(gateway)
    idle = _quiet(swarm3.nodes, [{k: metrics(n)[k] for k in keys} for n in swarm3.nodes], keys)
    with ExitStack() as stack:
        leaving = [stack.enter_context(_connect(gateway, address=f"127.0.3.{i + 1}")) for i in range(16)]
        for s in leaving:
            s.sendall(_post(gateway, LONG))
        heads = _answers(leaving, 10)  # the running ones have started their streams
        for s in leaving:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    after = _quiet(swarm3.nodes, idle, keys)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: _honest(gateway, f"127.0.4.{i + 1}"), range(4)))
    assert after == idle
    assert [a[0] for a in answers] == [text] * 4
    started = sum(h.startswith("HTTP/1.1 200") for h in heads.values())
    print(f"\nclients leaving mid-stream: {started} streams started, {16 - started} queued or refused, all reset; "
          f"nodes back to {idle}; honest 4-token completion {calm_s:.2f}s calm, "
          f"{max(a[1] for a in answers):.2f}s for four at once after")
