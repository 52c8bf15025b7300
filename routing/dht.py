"""Reading and writing SwarmLM records in a hivemind DHT.

The DHT runs in its own process; these coroutines are shipped there with `run_coroutine`, so
they are module-level functions (picklable) and return plain data.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import base58
from hivemind.dht import DHT
from hivemind.p2p import P2P
from hivemind.p2p.p2p_daemon_bindings import datastructures as p2p_datastructures
from hivemind.utils import get_dht_time

from ledger import bounds
from ledger.errors import EncodingError
from ledger.schema import PEER_ID

from . import untrusted
from .errors import RoutingError
from .records import VALUE_BOUNDS, RecordError, ServerRecord, block_key


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


class SwarmDHT(DHT):
    """hivemind's DHT process, made to die with its parent and to read its commands whole.

    The DHT runs in a forked child. Forked after our event loop installed its SIGTERM handler, the
    child would inherit that handler and survive a SIGTERM; killed parents would leave it orphaned.
    So the child restores the default SIGTERM action and asks Linux to signal it when the parent dies.

    hivemind's cache refresh is off: its background task re-fetches cached values and decodes them
    outside our validator, so a hostile value made it die with an exception nobody collected. We
    always ask the swarm afresh for what we route on, so the refresh saved us nothing. For the same
    reason a reader does not copy what it found to the peer nearest each key (hivemind's
    `cache_nearest`): our reads never stop at the first copy, so the copy only cost a store per key
    read (48 more RPCs per read of the model, each checked by its receiver) and fatter answers.

    Buckets (and so every lookup's beam) hold 10 peers, not hivemind's 20: a read of the model's 48
    keys asked ~20 peers about each key, ~160 RPCs, and an announcement ~120; with 10 both halve (an
    idle 32-node swarm: 3.2% of a core per node down to 1.8%). A value lives on the 5 peers nearest its
    key (`num_replicas`), so a beam of 10 still reaches all of them, with room for dead ones.
    """

    def __init__(self, *args: Any, p2pd_flags: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """`p2pd_flags`: p2pd command-line flags beyond what hivemind's P2P.create takes (relay limits)."""
        kwargs.setdefault("cache_refresh_before_expiry", 0)
        kwargs.setdefault("cache_nearest", 0)
        kwargs.setdefault("bucket_size", 10)
        self._p2pd_flags = dict(p2pd_flags or {})
        super().__init__(*args, **kwargs)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        if sys.platform == "linux":
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        self._inner_pipe = _WholeMessages(self._inner_pipe)
        if self._p2pd_flags:
            _append_p2pd_flags(self._p2pd_flags)
        _remember_peer_id_names()
        super().run()


class _CachedBase58:
    """hivemind's PeerID names every peer ID it decodes in base58 (pure Python): a lookup's every answer
    lists up to 20 nearest peers per key, and encoding them was a fifth of a 32-node swarm's DHT CPU.
    The same few peer IDs come back again and again, so the names are remembered (bounded: the bytes
    come from the network)."""

    def __init__(self) -> None:
        self.b58encode = lru_cache(maxsize=4096)(base58.b58encode)
        self.b58decode = base58.b58decode


def _remember_peer_id_names() -> None:
    """In the DHT's own process, have hivemind's PeerID encode through `_CachedBase58`."""
    p2p_datastructures.base58 = _CachedBase58()


def _append_p2pd_flags(flags: dict[str, Any]) -> None:
    """In the DHT's own process, have hivemind start p2pd with these flags too: P2P.create passes only its
    own parameters (no relay-service switch or limits), and of two equal Go flags the later one wins."""
    build = P2P._make_process_args

    def with_flags(*args: Any, **kwargs: Any) -> list[str]:
        return build(*args, **{**kwargs, **flags})

    P2P._make_process_args = staticmethod(with_flags)


DHT_TIMEOUT = 15.0  # seconds for one DHT operation; a dead DHT process must not hang its caller
PATIENCE = 4  # a second read of the records after a timed-out one may take this many DHT timeouts


class DHTTimeout(RoutingError):
    """The DHT did not answer in time (its process may be dead or the swarm unreachable)."""


@dataclass(frozen=True)
class Refused:
    """A value the DHT process would not hand over (too big or too deep to walk), and why."""

    reason: str


async def _call(dht: DHT, fn: Callable[..., Any], timeout: float) -> Any:
    try:
        return await asyncio.wait_for(dht.run_coroutine(fn, return_future=True), timeout)
    except asyncio.TimeoutError:
        raise DHTTimeout(f"the DHT did not answer within {timeout:g} s") from None


async def _store_many(dht: DHT, node: Any, keys: list[str], subkey: str, value: Any,
                      expiration: float) -> bool:
    n = len(keys)
    results = await node.store_many(keys, [value] * n, [expiration] * n, subkeys=[subkey] * n)
    return all(results.values())


def _bounded(subkey: Any, value: Any) -> tuple[str, Any]:
    """(subkey, value), with `Refused` standing in for what is unsafe to pickle back and walk."""
    if type(subkey) is not str:
        return f"<a {type(subkey).__name__} subkey>", Refused("its subkey is not a peer ID")
    try:
        bounds.check(value, VALUE_BOUNDS, "the DHT value")
    except EncodingError as e:
        return subkey, Refused(str(e))
    return subkey, value


async def _get_many(dht: DHT, node: Any, keys: list[str]) -> dict[str, dict[str, tuple[Any, float]]]:
    """Runs in the DHT process: the latest values under each key, by subkey, bounded, with their expiry."""
    found = await node.get_many(keys, sufficient_expiration_time=float("inf"))
    out: dict[str, dict[str, tuple[Any, float]]] = {}
    for key, item in found.items():
        if item is not None and isinstance(item.value, dict):
            out[key] = {sub: (value, float(v.expiration_time))
                        for sub, v in item.value.items() for sub, value in [_bounded(sub, v.value)]}
    return out


async def announce(dht: DHT, root: str, record: ServerRecord, ttl: float,
                   timeout: float = DHT_TIMEOUT) -> bool:
    """Store `record` under every block it serves, expiring `ttl` seconds from now."""
    keys = [block_key(root, i) for i in range(record.start, record.end)]
    fn = partial(_store_many, keys=keys, subkey=record.peer_id, value=record.to_value(),
                 expiration=get_dht_time() + ttl)
    return await _call(dht, fn, timeout)


async def fetch_records(dht: DHT, root: str, num_blocks: int,
                        timeout: float = DHT_TIMEOUT, blocks: Iterable[int] | None = None) -> dict[str, ServerRecord]:
    """Every node announcing any block of the model, one valid, signed record per peer: its latest
    (the one expiring last). A node that moved left its old record under its old blocks until that
    expires; the first found would show it where it no longer is (or offline) for minutes, and a hole
    it filled as still a hole. Records that fail the schema, lie outside the model or do not cover
    their key's block are dropped.

    `blocks`: read only these blocks' keys (the nodes serving them; a mover's latest record may then
    be missed), for a caller that needs no more: a lookup asks every peer near each key, so a read of
    the whole model costs the swarm a multiple of one key's."""
    chosen = sorted(set(range(num_blocks) if blocks is None else blocks) & set(range(num_blocks)))
    keys = [block_key(root, i) for i in chosen]
    raw = await _call(dht, partial(_get_many, keys=keys), timeout) if keys else {}
    records: dict[str, tuple[ServerRecord, float]] = {}
    for block, key in zip(chosen, keys):
        for peer, (value, expiry) in raw.get(key, {}).items():
            if peer in records and records[peer][1] >= expiry:
                continue
            if isinstance(value, Refused):
                untrusted.dropped("record", f"from {peer}: {value.reason}")
                continue
            record = ServerRecord.from_value(peer, value, num_blocks=num_blocks, block=block)
            if record is not None:
                records[peer] = record, expiry
    return {peer: record for peer, (record, _) in records.items()}


async def _routing_table_size(dht: DHT, node: Any) -> int:
    return len(node.protocol.routing_table.uid_to_peer_id)


async def peer_count(dht: DHT, timeout: float = DHT_TIMEOUT) -> int:
    """How many peers this node's DHT knows (for metrics)."""
    return await _call(dht, _routing_table_size, timeout)


def evidence_key(root: str) -> str:
    return f"swarmlm/{root}/evidence"


def _chunk_key(root: str, digest: str, i: int) -> str:
    return f"swarmlm/{root}/evidence/{digest}/{i}"


EVIDENCE_CHUNK = 16 << 10  # DHT values stay small; peers store and return them in ordinary RPCs
MAX_EVIDENCE_CHUNKS = 4096  # 64 MiB: routing.evidence.MAX_SIZE
_DIGEST = re.compile(r"[0-9a-f]{64}")


async def publish_evidence(dht: DHT, root: str, publisher: str, document: bytes, ttl: float,
                           timeout: float = DHT_TIMEOUT) -> bool:
    """Publish signed evidence under the model's evidence key: its chunks first, then an index
    {digest, chunks, size} under the publisher's subkey (one current document per publisher)."""
    digest = hashlib.sha256(document).hexdigest()
    expiration = get_dht_time() + ttl
    chunks = [document[i:i + EVIDENCE_CHUNK] for i in range(0, len(document), EVIDENCE_CHUNK)]
    for i, chunk in enumerate(chunks):
        fn = partial(_store_many, keys=[_chunk_key(root, digest, i)], subkey=publisher, value=chunk,
                     expiration=expiration)
        if not await _call(dht, fn, timeout):
            return False
    index = {"digest": digest, "chunks": len(chunks), "size": len(document)}
    fn = partial(_store_many, keys=[evidence_key(root)], subkey=publisher, value=index, expiration=expiration)
    return await _call(dht, fn, timeout)


def _evidence_index(index: Any) -> tuple[str, int, int]:
    """(digest, chunks, size) of a published index, or RecordError if it is not exactly one."""
    if type(index) is not dict or set(index) != {"digest", "chunks", "size"}:
        raise RecordError("an evidence index is a map of exactly digest, chunks and size")
    digest, chunks, size = index["digest"], index["chunks"], index["size"]
    if type(digest) is not str or not _DIGEST.fullmatch(digest):
        raise RecordError("the evidence digest is not 64 lowercase hex digits")
    if type(chunks) is not int or not 0 < chunks <= MAX_EVIDENCE_CHUNKS:
        raise RecordError(f"the evidence must come in 1 to {MAX_EVIDENCE_CHUNKS} chunks")
    if type(size) is not int or not (chunks - 1) * EVIDENCE_CHUNK < size <= chunks * EVIDENCE_CHUNK:
        raise RecordError(f"an evidence size of {size!r:.30} does not fit {chunks} chunks")
    return digest, chunks, size


def _assemble(parts: list[bytes], size: int, digest: str) -> bytes:
    """The document the chunks make, if it has the index's size and digest (up to 64 MiB: off the loop)."""
    document = b"".join(parts)
    if len(document) != size or hashlib.sha256(document).hexdigest() != digest:
        raise RecordError("the evidence chunks do not match the index's size and digest")
    return document


async def fetch_evidence(dht: DHT, root: str, timeout: float = DHT_TIMEOUT, *,
                         skip: Callable[[str, str], bool] = lambda publisher, digest: False,
                         limit: int | None = None) -> dict[str, tuple[str, bytes]]:
    """Published evidence documents by publisher, as (hex digest, document), reassembled and checked
    against their digests; a malformed index, a missing or wrong chunk drops that publisher's
    document (counted). Indexes `skip(publisher, digest)` rejects are not fetched, and at most
    `limit` documents are: each may be 64 MiB, and identities are free."""
    raw = await _call(dht, partial(_get_many, keys=[evidence_key(root)]), timeout)
    documents: dict[str, tuple[str, bytes]] = {}
    fetched = 0  # documents whose chunks were asked for, assembled or not
    for publisher, (value, _) in raw.get(evidence_key(root), {}).items():
        if limit is not None and fetched >= limit:
            break
        try:
            if not PEER_ID.check(publisher):
                raise RecordError("its subkey is not an Ed25519 peer ID")
            if isinstance(value, Refused):
                raise RecordError(value.reason)
            digest, chunks, size = _evidence_index(value)
            if skip(publisher, digest):
                continue
            fetched += 1
            keys = [_chunk_key(root, digest, i) for i in range(chunks)]
            found = await _call(dht, partial(_get_many, keys=keys), timeout)
            parts = [found.get(k, {}).get(publisher, (None, 0.0))[0] for k in keys]
            if not all(type(p) is bytes for p in parts):
                raise RecordError("a chunk of the evidence is missing or not bytes")
            document = await asyncio.get_running_loop().run_in_executor(None, _assemble, parts, size, digest)
        except RecordError as e:
            untrusted.dropped("evidence", f"from {publisher}: {e}")
            continue
        documents[publisher] = digest, document
    return documents
