"""A hostile HTTP client against a real `swarmlm api` process: slowloris, a flood that fills the queue,
streams nobody reads. Each attack ends with an honest client (another address, 127.0.0.2) getting the
same text as without the attack; its latency attacked vs not is printed (-s), not asserted."""

from __future__ import annotations

import json
import select
import socket
import time
from contextlib import ExitStack
from typing import Iterator

import httpx
import pytest

from tests.api.gateway_process import GatewayProcess, run_gateway

MODEL = "smollm2-135m-instruct"
HEAD_TIMEOUT_S = 3
MAX_CONNECTIONS = 64
MAX_QUEUE = 8
HONEST = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
ENDLESS = {"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 3000, "temperature": 0,
           "stream": True}
LONG = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def gateway(swarm3, tmp_path_factory) -> Iterator[GatewayProcess]:
    """Keyless, 4 workers (2 per client), a short queue, a short head deadline and a small connection cap."""
    args = ["--max-concurrency", "4", "--max-queue", str(MAX_QUEUE), "--head-timeout", str(HEAD_TIMEOUT_S),
            "--body-timeout", "3", "--send-timeout", "5", "--max-connections", str(MAX_CONNECTIONS)]
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


def _connect(gw: GatewayProcess, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
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


def test_slowloris_connections_are_closed_at_the_head_deadline_and_over_the_cap_at_once(gateway) -> None:
    text, calm_s = _honest(gateway)
    with ExitStack() as stack:
        slow = [stack.enter_context(_connect(gateway)) for _ in range(MAX_CONNECTIONS - 8)]
        for s in slow:
            s.sendall(b"GET /v1/mod")  # half a request line, never finished
        attacked_text, attacked_s = _honest(gateway)  # under the cap: served as usual
        over = [stack.enter_context(_connect(gateway)) for _ in range(24)]
        refused = [s for s in over if _closed_by_server(s, 1.0)]
        assert len(refused) >= 16, f"only {len(refused)} of the connections over the cap were closed at once"
        assert all(_closed_by_server(s, HEAD_TIMEOUT_S + 5) for s in slow)
        after_text, after_s = _honest(gateway)
    assert attacked_text == text == after_text
    print(f"\nslowloris: honest 4-token completion {calm_s:.2f}s calm, {attacked_s:.2f}s with "
          f"{len(slow)} half-sent heads open, {after_s:.2f}s once they were closed")


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


def _rest(sock: socket.socket) -> bytes:
    """What the socket still holds, up to its end (the gateway resets a stream it ended: nothing more)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_a_body_that_stops_coming_gets_408_and_the_connection_closed(gateway) -> None:
    with _connect(gateway) as s:
        s.sendall(_post(gateway, HONEST)[:-10])  # the head and all but 10 bytes of the body
        assert select.select([s], [], [], 3 + 10)[0], "no answer after the body deadline"
        assert s.recv(65536).startswith(b"HTTP/1.1 408")
        assert _closed_by_server(s, 5)


def test_streams_nobody_reads_stop_generating_and_give_their_workers_back(gateway) -> None:
    """Two 3000-token streams whose client reads nothing hold this address's 2 workers; once the buffers
    are full, the send deadline (5 s) ends them, so a request from the same address runs long before
    3000 tokens could have been generated."""
    text, calm_s = _honest(gateway, "127.0.0.1")
    with ExitStack() as stack:
        unread = [stack.enter_context(_connect(gateway, receive_buffer=4096)) for _ in range(2)]
        for s in unread:
            s.sendall(_post(gateway, ENDLESS))
        time.sleep(2)
        attacked_text, attacked_s = _honest(gateway, "127.0.0.1")
        assert not any(b"data: [DONE]" in _rest(s) for s in unread), "an unread stream ran to its end"
    assert attacked_text == text
    print(f"\nstalled readers: a 4-token completion from their address {calm_s:.2f}s calm, {attacked_s:.2f}s "
          "behind 2 unread 3000-token streams (the time their buffers took to fill, plus the 5 s deadline)")
