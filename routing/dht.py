"""Reading and writing SwarmLM records in a hivemind DHT.

The DHT runs in its own process; these coroutines are shipped there with `run_coroutine`, so
they are module-level functions (picklable) and return plain data.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
from functools import partial
from typing import Any

import hivemind
from hivemind.utils import get_dht_time

from .records import ServerRecord, block_key


class _WholeMessages:
    """The DHT process's end of its command pipe, read in blocking mode.

    hivemind polls the pipe from its event loop, whose reader makes the fd non-blocking; a command
    larger than the pipe's atomic write size can then be seen half-written, `recv` fails with
    EAGAIN, and the pipe is desynchronised for good. Once `poll` says a message has begun, waiting
    for the rest of it is correct.
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def recv(self) -> Any:
        fd = self._conn.fileno()
        os.set_blocking(fd, True)
        try:
            return self._conn.recv()
        finally:
            os.set_blocking(fd, False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class SwarmDHT(hivemind.DHT):
    """hivemind's DHT process, made to die with its parent and to read its commands whole.

    The DHT runs in a forked child. Forked after our event loop installed its SIGTERM handler, the
    child would inherit that handler and survive a SIGTERM; killed parents would leave it orphaned.
    So the child restores the default SIGTERM action and asks Linux to signal it when the parent dies.
    """

    def run(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        if sys.platform == "linux":
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        self._inner_pipe = _WholeMessages(self._inner_pipe)
        super().run()


async def _store_many(dht: hivemind.DHT, node: Any, keys: list[str], subkey: str, value: Any,
                      expiration: float) -> bool:
    n = len(keys)
    results = await node.store_many(keys, [value] * n, [expiration] * n, subkeys=[subkey] * n)
    return all(results.values())


async def _get_many(dht: hivemind.DHT, node: Any, keys: list[str]) -> dict[str, dict[str, Any]]:
    found = await node.get_many(keys, sufficient_expiration_time=float("inf"))  # the latest records
    out: dict[str, dict[str, Any]] = {}
    for key, item in found.items():
        if item is not None and isinstance(item.value, dict):
            out[key] = {sub: v.value for sub, v in item.value.items()}
    return out


async def announce(dht: hivemind.DHT, root: str, record: ServerRecord, ttl: float) -> bool:
    """Store `record` under every block it serves, expiring `ttl` seconds from now."""
    keys = [block_key(root, i) for i in range(record.start, record.end)]
    fn = partial(_store_many, keys=keys, subkey=record.peer_id, value=record.to_value(),
                 expiration=get_dht_time() + ttl)
    return await dht.run_coroutine(fn, return_future=True)


async def fetch_records(dht: hivemind.DHT, root: str, num_blocks: int) -> dict[str, ServerRecord]:
    """Every node announcing any block of the model, one (valid, signed) record per peer."""
    keys = [block_key(root, i) for i in range(num_blocks)]
    raw = await dht.run_coroutine(partial(_get_many, keys=keys), return_future=True)
    records: dict[str, ServerRecord] = {}
    for by_peer in raw.values():
        for peer, value in by_peer.items():
            if isinstance(peer, str) and peer not in records:
                record = ServerRecord.from_value(peer, value)
                if record is not None:
                    records[peer] = record
    return records


async def _routing_table_size(dht: hivemind.DHT, node: Any) -> int:
    return len(node.protocol.routing_table.uid_to_peer_id)


async def peer_count(dht: hivemind.DHT) -> int:
    """How many peers this node's DHT knows (for metrics)."""
    return await dht.run_coroutine(_routing_table_size, return_future=True)


def evidence_key(root: str) -> str:
    return f"swarmlm/{root}/evidence"


def _chunk_key(root: str, digest: str, i: int) -> str:
    return f"swarmlm/{root}/evidence/{digest}/{i}"


EVIDENCE_CHUNK = 16 << 10  # DHT values stay small; peers store and return them in ordinary RPCs
MAX_EVIDENCE_CHUNKS = 4096


async def publish_evidence(dht: hivemind.DHT, root: str, publisher: str, document: bytes, ttl: float) -> bool:
    """Publish signed evidence under the model's evidence key: its chunks first, then an index
    {digest, chunks, size} under the publisher's subkey (one current document per publisher)."""
    digest = hashlib.sha256(document).hexdigest()
    expiration = get_dht_time() + ttl
    chunks = [document[i:i + EVIDENCE_CHUNK] for i in range(0, len(document), EVIDENCE_CHUNK)]
    for i, chunk in enumerate(chunks):
        fn = partial(_store_many, keys=[_chunk_key(root, digest, i)], subkey=publisher, value=chunk,
                     expiration=expiration)
        if not await dht.run_coroutine(fn, return_future=True):
            return False
    index = {"digest": digest, "chunks": len(chunks), "size": len(document)}
    fn = partial(_store_many, keys=[evidence_key(root)], subkey=publisher, value=index, expiration=expiration)
    return await dht.run_coroutine(fn, return_future=True)


async def fetch_evidence(dht: hivemind.DHT, root: str) -> dict[str, bytes]:
    """Published evidence documents by publisher, reassembled and checked against their digests."""
    raw = await dht.run_coroutine(partial(_get_many, keys=[evidence_key(root)]), return_future=True)
    documents: dict[str, bytes] = {}
    for publisher, index in raw.get(evidence_key(root), {}).items():
        if not (isinstance(index, dict) and isinstance(index.get("digest"), str)
                and type(index.get("chunks")) is int and 0 < index["chunks"] <= MAX_EVIDENCE_CHUNKS):
            continue
        keys = [_chunk_key(root, index["digest"], i) for i in range(index["chunks"])]
        found = await dht.run_coroutine(partial(_get_many, keys=keys), return_future=True)
        parts = [found.get(k, {}).get(publisher) for k in keys]
        if all(isinstance(p, bytes) for p in parts):
            document = b"".join(parts)
            if hashlib.sha256(document).hexdigest() == index["digest"]:
                documents[publisher] = document
    return documents
