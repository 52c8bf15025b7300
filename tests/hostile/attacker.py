"""A hostile peer's toolkit: nothing but fresh identities and the public protocol, against real processes.

- `Sybils`: any number of fresh identities publishing into a swarm's DHT from a DHT peer of their
  own. Each value is validly signed by the key its subkey names, so honest peers store and hand
  out whatever their validators do not refuse: server records (well-formed lies or malformed
  ones), evidence indexes and documents.
- `Attacker`: one fresh identity with streams to a node's handlers, carrying whatever bytes it
  likes: whole frames, frames with hostile values anywhere (`pack` splices in lists nested
  deeper than msgpack packs), bytes trickled or cut off, sessions opened and left idle,
  receipts that are garbage.
- `group_rss`, `metrics`, `is_up`, `serve_entries`: what the tests measure of a node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import secrets
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hivemind.dht import DHT
import msgpack
import torch
from hivemind.dht.validation import DHTRecord
from hivemind.utils import get_dht_time
from prometheus_client.parser import text_string_to_metric_families

from ledger.entries import ServeEntry
from ledger.errors import LedgerError
from ledger.keys import Identity
from ledger.store import Ledger
from node.local_swarm import LocalNode
from routing import dht as dht_io
from routing import wire
from routing.client import SwarmClient
from routing.errors import ProtocolError
from routing.records import SignedRecordValidator, block_key

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from soak import group_rss  # noqa: E402, F401  (for the tests; scripts import each other by name)

from .valid import deep_list_bytes, deep_value  # noqa: E402

INFO, FORWARD, INFERENCE, PUSH, LEDGER = ("swarmlm.info", "swarmlm.forward", "swarmlm.inference", "swarmlm.push",
                                          "swarmlm.ledger")


# ---- the DHT ---------------------------------------------------------------------------------------

class SybilValidator(SignedRecordValidator):
    """Signs every value whose subkey is one of its identities, with that identity's own key: valid
    signatures all, so honest validators refuse only what they would refuse from anyone."""

    def __init__(self, seeds: Iterable[bytes]) -> None:
        super().__init__()
        self._seeds = {Identity(s).peer_id: s for s in seeds}

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_seeds": self._seeds}

    def sign_value(self, record: DHTRecord) -> bytes:
        seed = self._seed_of(record)
        return record.value if seed is None else SignedRecordValidator(seed).sign_value(record)

    def validate(self, record: DHTRecord) -> bool:
        """Its own values are kept and served whatever they hold, as an attacker's DHT peer would."""
        return self._seed_of(record) is not None or super().validate(record)

    def _seed_of(self, record: DHTRecord) -> bytes | None:
        """The key of the identity a subkey names, if it is ours (any subkey: no peer ID parsing)."""
        try:
            owner = msgpack.unpackb(record.subkey, raw=False)
        except (TypeError, ValueError):
            return None
        return self._seeds.get(owner) if isinstance(owner, str) else None


class Sybils:
    """`count` fresh identities in one DHT peer of the swarm (a full one: it keeps and serves what it
    stores, whatever honest peers think of it); values expire `ttl` seconds after storing."""

    def __init__(self, initial_peers: Sequence[str], count: int, ttl: float = 120.0) -> None:
        self.identities = [Identity.generate() for _ in range(count)]
        self.ttl = ttl
        self.dht = dht_io.SwarmDHT(initial_peers=list(initial_peers), start=True, client_mode=False,
                                   host_maddrs=["/ip4/127.0.0.1/tcp/0"],
                                   record_validators=[SybilValidator(i.seed for i in self.identities)])

    @property
    def peer_ids(self) -> list[str]:
        return [i.peer_id for i in self.identities]

    def store(self, items: Iterable[tuple[str, str, Any]]) -> int:
        """Store (key, subkey, value) items at once (a `Deep` anywhere in a value is built in the DHT
        process); how many some peer accepted."""
        store = partial(_store, items=list(items), expiration=get_dht_time() + self.ttl)
        return self.dht.run_coroutine(store, return_future=True).result(timeout=120)

    def record(self, who: str, root: str, value: Any, blocks: Iterable[int]) -> int:
        """`value` as `who`'s server record under each of `blocks`' keys (whatever span it claims)."""
        return self.store((block_key(root, b), who, value) for b in blocks)

    def records(self, root: str, values: dict[str, tuple[Any, Iterable[int]]]) -> dict[str, int]:
        """Each identity's (value, blocks) stored as its server record, all in one batch; by identity,
        under how many keys some peer accepted it."""
        items = [(block_key(root, b), who, value) for who, (value, blocks) in values.items() for b in blocks]
        store = partial(_store_many, items=items, expiration=get_dht_time() + self.ttl)
        stored = self.dht.run_coroutine(store, return_future=True).result(timeout=120)
        return {who: sum(stored.get((key, who), False) for key, sub, _ in items if sub == who) for who in values}

    def evidence(self, who: str, root: str, document: bytes) -> bool:
        """`document` published as `who`'s evidence, chunks and index, the way honest clients publish."""
        return asyncio.run(dht_io.publish_evidence(self.dht, root, who, document, self.ttl))

    def evidence_index(self, who: str, root: str, value: Any) -> int:
        """Any value where `who`'s evidence index belongs."""
        return self.store([(dht_io.evidence_key(root), who, value)])

    def close(self) -> None:
        self.dht.shutdown()


@dataclass(frozen=True)
class Deep:
    """A list nested `depth` deep, built only where it is used: too deep to pickle or pack."""

    depth: int


def built(value: Any) -> Any:
    """`value` with each `Deep` in it (outside other Deeps) made a real nested list."""
    if isinstance(value, Deep):
        return deep_value(value.depth)
    if isinstance(value, dict):
        return {k: built(v) for k, v in value.items()}
    return [built(v) for v in value] if isinstance(value, list) else value


async def _store(dht: DHT, node: Any, items: list[tuple[str, str, Any]], expiration: float) -> int:
    """Runs in the DHT process; a value hivemind cannot serialize (nested past 1024) is not stored."""
    stored = await asyncio.gather(*(node.store(key, built(value), expiration, subkey=subkey)
                                    for key, subkey, value in items), return_exceptions=True)
    return sum(result is True for result in stored)


async def _store_many(dht: DHT, node: Any, items: list[tuple[str, str, Any]], expiration: float
                      ) -> dict[tuple[str, str], bool]:
    """Runs in the DHT process: one traversal for all the items, however many (`_store` runs one
    per item); whether each (key, subkey) was stored."""
    stored = await node.store_many([k for k, _, _ in items], [built(v) for _, _, v in items], expiration,
                                   subkeys=[s for _, s, _ in items])
    return {(k, s): ok is True for (k, s), ok in stored.items()}


def fake_node(peer_id: str, num_blocks: int, **changes: Any) -> dict[str, Any]:
    """A well-formed record of a node claiming every block at the highest throughput a schema
    allows, with no load and addresses where nothing listens."""
    dead = [f"/ip4/127.0.0.1/tcp/{1 + secrets.randbelow(1000)}/p2p/{peer_id}",
            f"/ip4/192.0.2.{1 + secrets.randbelow(250)}/tcp/4001/p2p/{peer_id}"]
    return {"state": "online", "start": 0, "end": num_blocks, "throughput": 1e6, "dtype": "float32",
            "device": "cuda", "cache_tokens_left": 1 << 30, "version": wire.PROTOCOL_VERSION, "name": "fast",
            "active_sessions": 0, "max_step_tokens": 2048, "max_session_length": 8192, "maddrs": dead,
            **changes}


# ---- frames ----------------------------------------------------------------------------------------

def pack(value: Any) -> bytes:
    """msgpack of `value`, with each `Deep` in it as its nested list (which `msgpack.packb` refuses
    past 1024 levels)."""
    splices: dict[bytes, bytes] = {}

    def marker(obj: Any) -> msgpack.ExtType:
        if not isinstance(obj, Deep):
            raise TypeError(f"cannot pack {type(obj).__name__}")
        token = msgpack.ExtType(42, secrets.token_bytes(8))
        splices[msgpack.packb(token)] = deep_list_bytes(obj.depth)
        return token

    data = msgpack.packb(value, use_bin_type=True, default=marker)
    for placeholder, raw in splices.items():
        data = data.replace(placeholder, raw, 1)
    return data


def frame(value: Any) -> bytes:
    """A length-prefixed frame of any value (Deeps allowed)."""
    body = pack(value)
    return len(body).to_bytes(4, "big") + body


def header(size: int) -> bytes:
    """A frame's length prefix alone: a promise of `size` bytes."""
    return size.to_bytes(4, "big")


def tensor(shape: Sequence[int], fill: float | None = None) -> dict[str, Any]:
    t = torch.randn(*shape) if fill is None else torch.full(tuple(shape), fill)
    return wire.encode_tensor(t)


# ---- streams ---------------------------------------------------------------------------------------

@dataclass
class Reply:
    """What a node sent back on one stream, and how the stream ended."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    ended: str = ""  # "closed" by the node, "silent" past the idle wait, "enough" frames, "hung up" by us,
    # or "garbled" (a reply that is not a frame)
    sent: int = 0  # bytes we had written when the node's first frame arrived (or in all)

    @property
    def codes(self) -> list[str]:
        """Each frame's error code, or its type."""
        return [str(f.get("code")) if f.get("type") == "error" else str(f.get("type")) for f in self.frames]


class Attacker:
    """One fresh identity, with streams to any node it has addresses for."""

    def __init__(self, initial_peers: Sequence[str], nodes: Iterable[LocalNode] = (), request_timeout: float = 60.0
                 ) -> None:
        self.link = SwarmClient(initial_peers, request_timeout=request_timeout)
        for node in nodes:
            self.link.remember(node.peer_id, node.maddrs)

    @property
    def peer_id(self) -> str:
        return self.link.peer_id

    def run(self, coro: Any, timeout: float = 300.0) -> Any:
        return self.link.run(coro, timeout)

    def start(self, *coros: Any) -> concurrent.futures.Future:
        """Run coroutines together in the background; the future's result is their results, in order."""
        return asyncio.run_coroutine_threadsafe(_together(coros), self.link.loop)

    def send(self, peer: str, handler: str, payloads: Sequence[bytes], **how: Any) -> Reply:
        return self.run(self.exchange(peer, handler, payloads, **how))

    async def exchange(self, peer: str, handler: str, payloads: Sequence[bytes], *, piece: int | None = None,
                       pace: float = 0.0, hang_up: bool = False, idle: float = 30.0, frames: int | None = None
                       ) -> Reply:
        """Write `payloads` on one new stream (in `piece`-byte pieces, each followed by `pace`
        seconds of silence), then collect what the node sends until it closes the stream, is silent
        for `idle` seconds, or has sent `frames` frames. Writing stops as soon as the node answers
        (say, a refusal of a frame still being sent). `hang_up` closes the stream after writing."""
        reader, writer = await self.link.open_stream(peer, handler)
        reply = Reply()
        reading = asyncio.ensure_future(self._collect(reader, reply, idle, frames))
        try:
            for data in payloads:
                for at in range(0, len(data), piece or max(1, len(data))):
                    if reply.frames or reading.done():
                        break
                    chunk = data[at:at + (piece or len(data))]
                    writer.write(chunk)
                    await writer.drain()
                    reply.sent += len(chunk)
                    if pace:
                        await asyncio.sleep(pace)
        except (ConnectionError, RuntimeError):
            pass  # the node closed the stream under us: what it said is being read
        if hang_up:
            reading.cancel()
            writer.close()
            reply.ended = "hung up"
            return reply
        try:
            await reading
        finally:
            writer.close()
        return reply

    @staticmethod
    async def _collect(reader: asyncio.StreamReader, reply: Reply, idle: float, frames: int | None) -> None:
        try:
            while len(reply.frames) != frames:
                reply.frames.append(await asyncio.wait_for(wire.read_frame(reader), idle))
            reply.ended = "enough"
        except asyncio.TimeoutError:
            reply.ended = "silent"
        except (asyncio.IncompleteReadError, ConnectionError):
            reply.ended = "closed"
        except ProtocolError:
            reply.ended = "garbled"

    def info(self, node: LocalNode) -> dict[str, Any]:
        return self.run(self.link.ping(node.peer_id), timeout=60)[1].raw

    def close(self) -> None:
        self.link.close()


async def _together(coros: Sequence[Any]) -> list[Any]:
    return list(await asyncio.gather(*coros))


# ---- what the tests measure ------------------------------------------------------------------------

def is_up(attacker: Attacker, node: LocalNode) -> bool:
    """The node's process lives and its `swarmlm.info` answers with its own peer ID."""
    if node.process is None or node.process.poll() is not None:
        return False
    try:
        return attacker.info(node).get("peer_id") == node.peer_id
    except Exception:
        return False


def metrics(node: LocalNode) -> dict[str, float]:
    """The node's unlabelled Prometheus samples by name (it must run with --metrics-port)."""
    url = re.search(r"^metrics (\S+)$", Path(node.log).read_text(), re.M)
    assert url, f"{node.name} serves no metrics: start it with --metrics-port 0"
    text = urllib.request.urlopen(url.group(1), timeout=30).read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if not s.labels}


def down(attacker: Attacker, nodes: Iterable[LocalNode]) -> list[str]:
    """The names of the nodes that are not up."""
    return [n.name for n in nodes if not is_up(attacker, n)]


def serve_entries(node: LocalNode, wait: float = 30.0, session: str | None = None) -> list[ServeEntry]:
    """The `serve` entries in the node's ledger file, polled for up to `wait` seconds until one for
    `session` is there (a writer thread commits them off the serving path)."""
    deadline = time.monotonic() + wait
    while True:
        found: list[ServeEntry] = []
        try:
            with Ledger(node.ledger) as ledger:
                found = [e for r in ledger.query(kind="serve") if isinstance(e := r.decode(), ServeEntry)]
        except LedgerError:
            pass  # not created yet
        if session is None or any(e.session == session for e in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def fresh_session() -> str:
    return f"atk-{os.urandom(4).hex()}"
