"""The fuzzer's HTTP target (fuzz.py): raw requests to a real `swarmlm api` gateway.

A case starts from a request the OpenAI clients send (a completion, a chat, a GET of a page the
gateway serves) and breaks it one way an HTTP attacker would: a mutated JSON body (mutate.Mutator,
with values nested past any parser's limit written as JSON), bytes that are not JSON, JSON nested a
million deep, a body over the gateway's 4 MiB bound or a Content-Length that promises more than
comes, a content type that is not JSON, hostile headers and request lines (a foreign Host or
Origin, a lying or doubled Content-Length, broken chunked encoding, a 100 KB header), a request sent
slowly in pieces or cut off, a stream read for one chunk and then hung up on. Everything goes over
a plain socket, so nothing a client library would correct on the way is corrected.

The outcome is the status line (or how the connection ended); a 500, an error of type
`server_error` anywhere in the answer (a stream's error event included), or an answer that is not
HTTP is a failure.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from fuzz_targets import Failure
from mutate import Mutator
from tests.hostile.attacker import Deep

MODEL = "smollm2-135m-instruct"
BODIES = {
    "/v1/completions": {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 2, "temperature": 0},
    "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
                             "temperature": 0, "stop": ["\n"], "logprobs": False},
}
PAGES = ["/health", "/metrics", "/v1/models", f"/v1/models/{MODEL}", "/swarm/info", "/swarm/status",
         "/swarm/checkpoints", "/swarm/ledger/12D3KooWxyz", "/", "/index.html", "/v1/nothing", "/../../etc/passwd",
         "/%00", "/%ff%fe", "/v1/models/" + "a" * 5000, "/swarm/ledger/" + "%2e%2e%2f" * 50]
CONTENT_TYPES = ["text/plain", "", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                 "application/jsonx", "application/json; charset=utf-16", "APPLICATION/JSON", "application/*",
                 "text/json", "application/json\x00"]
MAX_BODY = 4 << 20  # the gateway's bound (swarmlm/api/completions.py)
READ_LIMIT = 1 << 20  # bytes of an answer read before the case hangs up
SLOW_PAUSE = (0.05, 0.3, 1.0)  # seconds between the pieces of a slow request


@dataclass
class HttpCase:
    kind: str
    pieces: list[bytes]  # written in turn, `pause` seconds apart
    pause: float = 0.0
    hang_up: bool = False  # close after writing, without reading (a request cut off)
    read: int = READ_LIMIT  # bytes to read before hanging up (a stream nobody reads on)
    expect_answer: bool = True  # a complete request: ending without a status line is suspicious
    meta: dict[str, Any] = field(default_factory=dict)


def json_text(value: Any) -> bytes:
    """`value` as JSON text the way a hostile client writes it: non-finite numbers as NaN/Infinity,
    bytes as text, and each `Deep` as brackets nested that deep (no encoder would write them)."""
    splices: dict[str, str] = {}

    def plain(v: Any) -> Any:
        if isinstance(v, Deep):
            token = f"@deep{secrets.token_hex(6)}@"
            splices[f'"{token}"'] = "[" * v.depth + "]" * v.depth
            return token
        if isinstance(v, dict):
            return {str(k) if not isinstance(k, bytes) else k.decode("latin-1"): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, bytes):
            return v.decode("latin-1")
        return v

    text = json.dumps(plain(value), allow_nan=True)
    for token, deep in splices.items():
        text = text.replace(token, deep)
    return text.encode("utf-8", "surrogatepass")


def _request(method: str, path: str, body: bytes | None, headers: list[tuple[str, str]] | None = None,
             *, content_type: str = "application/json", version: str = "HTTP/1.1") -> bytes:
    head = [f"{method} {path} {version}", "Host: 127.0.0.1", "Connection: close"]
    if body is not None:
        if content_type:
            head.append(f"Content-Type: {content_type}")
        head.append(f"Content-Length: {len(body)}")
    head += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + (body or b"")


def _valid(m: Mutator) -> tuple[str, dict[str, Any]]:
    path = m.rng.choice(sorted(BODIES))
    body = dict(BODIES[path])
    if m.rng.random() < 0.3:
        body["stream"] = True
    return path, body


def case(m: Mutator) -> HttpCase:
    rng = m.rng
    kind = rng.choices(["json", "bytes", "deep", "oversized", "content_type", "headers", "slow", "cut", "page",
                        "stream", "valid"], [30, 8, 6, 5, 8, 12, 5, 5, 10, 6, 5])[0]
    path, body = _valid(m)
    if kind == "json":
        return HttpCase(kind, [_request("POST", path, json_text(m.document(body)))])
    if kind == "valid":
        return HttpCase(kind, [_request("POST", path, json_text(body))])
    if kind == "bytes":
        return HttpCase(kind, [_request("POST", path, m.bytes(json_text(body)))])
    if kind == "deep":
        depth = rng.choice([100, 1000, 10_000, 100_000, 1_000_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('{"prompt":', "}")])
        nested = opener * depth + "1" + closer * depth
        if rng.random() < 0.5:  # inside a field of a valid request
            nested = json_text({**body, "prompt": "@@"}).decode().replace('"@@"', nested)
        return HttpCase(kind, [_request("POST", path, nested.encode())])
    if kind == "oversized":
        if rng.random() < 0.5:  # a real body just over the bound
            text = json_text({**body, "prompt": "a" * (MAX_BODY + rng.choice([1, 1000, 1 << 20]))})
            return HttpCase(kind, [_request("POST", "/v1/completions", text)])
        promised = rng.choice([MAX_BODY + 1, 1 << 31, (1 << 63) - 1, 10 ** 30])
        raw = _request("POST", path, b"", [("X-Fill", "1")]).replace(b"Content-Length: 0", f"Content-Length: {promised}"
                                                                     .encode())
        return HttpCase(kind, [raw + json_text(body)])
    if kind == "content_type":
        return HttpCase(kind, [_request("POST", path, json_text(body), content_type=rng.choice(CONTENT_TYPES))])
    if kind == "headers":
        return HttpCase(kind, [_hostile_head(m, path, json_text(body))])
    if kind in ("slow", "cut"):
        raw = _request("POST", path, json_text(body))
        cuts = sorted(rng.sample(range(1, len(raw)), rng.randrange(2, 6)))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
        if kind == "cut":
            return HttpCase(kind, pieces[:-1], pause=rng.choice(SLOW_PAUSE[:2]), hang_up=rng.random() < 0.5,
                            expect_answer=False)
        return HttpCase(kind, pieces, pause=rng.choice(SLOW_PAUSE))
    if kind == "page":
        method = rng.choice(["GET", "GET", "GET", "HEAD", "POST", "DELETE", "OPTIONS", "PUT"])
        page = rng.choice(PAGES)
        if rng.random() < 0.3:
            page += "?" + m.text("limit=10&after=0&peer=x")
        return HttpCase(kind, [_request(method, page, None if method in ("GET", "HEAD", "DELETE", "OPTIONS") else
                                        json_text(m.document({"x": 1})))])
    body["stream"], body["max_tokens"] = True, rng.choice([8, 64])  # a stream read for a moment, then left
    return HttpCase(kind, [_request("POST", path, json_text(body))], read=rng.choice([0, 200, 2000]),
                    expect_answer=False)


def _hostile_head(m: Mutator, path: str, body: bytes) -> bytes:
    rng = m.rng
    how = rng.choice(["host", "origin", "auth", "length", "double_length", "chunked", "big_header", "many_headers",
                      "bytes", "version", "line", "no_host"])
    if how == "host":
        return _request("POST", path, body, [("Host", rng.choice(["evil.example", "127.0.0.1.evil", "", "[::1",
                                                                  "a" * 300, "localhost:99999"]))])\
            .replace(b"Host: 127.0.0.1\r\n", b"", 1)
    if how == "origin":
        return _request("POST", path, body, [("Origin", rng.choice(["https://evil.example", "null", "",
                                                                    "http://127.0.0.1:1", "x" * 5000]))])
    if how == "auth":
        return _request("POST", path, body, [("Authorization", rng.choice(["Bearer", "Bearer " + "k" * 10000,
                                                                           "Basic \x7f", "Bearer sk-\u00e9"]))])
    if how == "length":
        return _request("POST", path, body).replace(f"Content-Length: {len(body)}".encode(), f"Content-Length: "
                                                    f"{rng.choice(['-1', 'abc', '1e3', '0x10', ' ', '0'])}".encode())
    if how == "double_length":
        return _request("POST", path, body, [("Content-Length", str(len(body) + 5))])
    if how == "chunked":
        size = rng.choice(["zz", "-1", "ffffffffffffffffff", f"{len(body):x}", "0"])
        raw = _request("POST", path, None, [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
        return raw + f"{size}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    if how == "big_header":
        return _request("POST", path, body, [("X-Big", "b" * rng.choice([8_000, 100_000, 1_000_000]))])
    if how == "many_headers":
        return _request("POST", path, body, [(f"X-H{i}", "v") for i in range(rng.choice([100, 1000, 10_000]))])
    if how == "bytes":
        return m.bytes(_request("POST", path, body))
    if how == "version":
        return _request("POST", path, body, version=rng.choice(["HTTP/1.0", "HTTP/2.0", "HTTP/9", "http/1.1", ""]))
    if how == "line":
        return rng.choice([b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/1.1\n\n",
                           b"GET " + b"/" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                           b"get / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03"])
    return _request("POST", path, body).replace(b"Host: 127.0.0.1\r\n", b"", 1)


async def exchange(host: str, port: int, c: HttpCase, idle: float) -> str:
    """Send `c` and read the answer; its outcome label, or Failure."""
    reader, writer = await asyncio.open_connection(host, port)
    answer = bytearray()
    try:
        try:
            for i, piece in enumerate(c.pieces):
                if i and c.pause:
                    await asyncio.sleep(c.pause)
                writer.write(piece)
                await writer.drain()
            if c.hang_up:
                return "hung up"
        except (ConnectionError, RuntimeError):  # asyncio's RuntimeError: a write to a transport closed meanwhile
            pass  # the gateway closed early (a 413, or a 408 at the head deadline): read what it said
        try:
            while len(answer) < c.read or not answer:
                chunk = await asyncio.wait_for(reader.read(65536), idle)
                if not chunk:
                    break
                answer += chunk
                if c.read == 0:
                    break
        except ConnectionError:
            pass
        except asyncio.TimeoutError:
            if c.expect_answer or not answer:
                return "no answer (idle)" if not c.expect_answer else _fail(c, "no answer within "
                                                                           f"{idle:.0f}s", answer)
    finally:
        writer.close()
    return _outcome(c, bytes(answer))


def _outcome(c: HttpCase, answer: bytes) -> str:
    if not answer:
        return f"{c.kind}: closed"
    if not answer.startswith(b"HTTP/1."):
        _fail(c, "an answer that is not HTTP", answer)
    status = answer[9:12].decode("latin-1")
    if status == "500" or b'"server_error"' in answer or b"internal error" in answer:
        _fail(c, f"status {status}", answer)
    return f"{c.kind}: {status}"


def _fail(c: HttpCase, why: str, answer: bytes) -> str:
    raise Failure(f"{c.kind} request ({c.pieces[0][:120]!r}…): {why}: {bytes(answer[:400])!r}")
