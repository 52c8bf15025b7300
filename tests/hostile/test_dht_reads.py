"""What the DHT hands back is bounded and checked before use: bad records and evidence are dropped
and counted (and exported as a metric), and a DHT that never answers is a DHTTimeout, not a hang."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import pytest

from ledger.keys import Identity
from node.metrics import NodeMetrics
from routing import dht as dht_io
from routing import untrusted
from routing.dht import DHTTimeout
from routing.records import block_key

from . import valid

ROOT = valid.ROOT.hex()


@dataclass
class _Item:
    value: Any
    expiration_time: float = 0.0


class _Node:
    """The DHTNode calls our coroutines make, over a dict: key -> subkey -> value (and their expiry)."""

    def __init__(self) -> None:
        self.store: dict[str, dict[Any, Any]] = {}
        self.expiry: dict[tuple[str, Any], float] = {}

    async def store_many(self, keys: list[str], values: list[Any], expirations: list[float],
                         subkeys: list[Any]) -> dict[str, bool]:
        for key, value, expiration, subkey in zip(keys, values, expirations, subkeys):
            self.store.setdefault(key, {})[subkey] = value
            self.expiry[key, subkey] = expiration
        return {key: True for key in keys}

    async def get_many(self, keys: list[str], sufficient_expiration_time: float) -> dict[str, Any]:
        return {k: _Item({s: _Item(v, self.expiry.get((k, s), 0.0)) for s, v in self.store[k].items()})
                if k in self.store else None for k in keys}


class _DHT:
    """hivemind.DHT's `run_coroutine`, run in this process; `dead` never answers."""

    def __init__(self, dead: bool = False) -> None:
        self.node, self.dead = _Node(), dead

    def run_coroutine(self, fn: Any, return_future: bool = False) -> asyncio.Future[Any]:
        if self.dead:
            return asyncio.get_running_loop().create_future()
        return asyncio.ensure_future(fn(self, self.node))


def _put(dht: _DHT, block: int, subkey: Any, value: Any) -> None:
    dht.node.store.setdefault(block_key(ROOT, block), {})[subkey] = value


def test_fetch_records_keeps_honest_records_and_counts_each_hostile_one() -> None:
    dht = _DHT()
    honest = valid.record()  # blocks 10:20
    for block in range(honest.start, honest.end):
        _put(dht, block, honest.peer_id, honest.to_value())
    _put(dht, 7, valid.CHECKER.peer_id, valid.record(peer_id=valid.CHECKER.peer_id, start=0, end=5).to_value())
    _put(dht, 3, valid.CLIENT.peer_id, {**honest.to_value(), "extra": valid.deep_value(2000)})
    _put(dht, 4, 12345, honest.to_value())
    before = untrusted.snapshot()["record"]
    records = asyncio.run(dht_io.fetch_records(dht, ROOT, valid.NUM_BLOCKS))
    assert records == {honest.peer_id: honest}
    assert untrusted.snapshot()["record"] == before + 3


def test_a_node_that_moved_is_read_where_it_announced_last() -> None:
    """Its record under its old blocks outlives the move (until it expires); the latest one counts."""
    dht = _DHT()
    old, moved = valid.record(start=0, end=8, state="draining"), valid.record(start=10, end=18)
    for block in range(0, 8):
        _put(dht, block, old.peer_id, old.to_value())
        dht.node.expiry[block_key(ROOT, block), old.peer_id] = 100.0
    for block in range(10, 18):
        _put(dht, block, moved.peer_id, moved.to_value())
        dht.node.expiry[block_key(ROOT, block), moved.peer_id] = 160.0
    assert asyncio.run(dht_io.fetch_records(dht, ROOT, valid.NUM_BLOCKS)) == {moved.peer_id: moved}


def test_a_read_of_some_blocks_asks_for_their_keys_only() -> None:
    dht, asked = _DHT(), []
    get_many = dht.node.get_many

    async def counted(keys: list[str], sufficient_expiration_time: float) -> dict[str, Any]:
        asked.extend(keys)
        return await get_many(keys, sufficient_expiration_time)

    dht.node.get_many = counted  # type: ignore[method-assign]
    first, second = valid.record(start=0, end=8), valid.record(peer_id=valid.CHECKER.peer_id, start=8, end=16)
    for record in (first, second):
        for block in range(record.start, record.end):
            _put(dht, block, record.peer_id, record.to_value())
    assert asyncio.run(dht_io.fetch_records(dht, ROOT, valid.NUM_BLOCKS, blocks=[8, valid.NUM_BLOCKS])) == {
        second.peer_id: second}
    assert asked == [block_key(ROOT, 8)]  # a block past the model's end is not asked for
    assert asyncio.run(dht_io.fetch_records(dht, ROOT, valid.NUM_BLOCKS, blocks=[])) == {}
    assert asked == [block_key(ROOT, 8)]  # nothing to read: no DHT call


def test_fetch_evidence_reassembles_honest_documents_and_drops_the_rest() -> None:
    dht = _DHT()
    document = b"evidence" * 5000  # three chunks
    honest, liar, short = valid.NODE.peer_id, valid.CHECKER.peer_id, valid.CLIENT.peer_id

    async def publish() -> dict[str, bytes]:
        for publisher in (honest, liar, short):
            assert await dht_io.publish_evidence(dht, ROOT, publisher, document, ttl=60)
        index = dht.node.store[dht_io.evidence_key(ROOT)]
        index[liar] = {**index[liar], "size": len(document) - 1}  # does not match its chunks
        digest = index[short]["digest"]
        del dht.node.store[f"swarmlm/{ROOT}/evidence/{digest}/2"][short]  # a chunk went missing
        index["not-a-peer"] = index[honest]
        index[Identity(b"\x04" * 32).peer_id] = valid.deep_value(1000)
        return await dht_io.fetch_evidence(dht, ROOT)

    before = untrusted.snapshot()["evidence"]
    assert asyncio.run(publish()) == {honest: (hashlib.sha256(document).hexdigest(), document)}
    assert untrusted.snapshot()["evidence"] == before + 4


def test_fetch_evidence_skips_what_the_caller_has_seen_and_stops_at_its_limit() -> None:
    """Documents may be 64 MiB each and identities are free: nothing judged before, and no more than
    `limit`, is fetched."""
    dht = _DHT()
    publishers = [Identity(bytes([i]) * 32).peer_id for i in range(1, 7)]

    async def fetch(**kw: Any) -> dict[str, tuple[str, bytes]]:
        for i, publisher in enumerate(publishers):
            assert await dht_io.publish_evidence(dht, ROOT, publisher, b"doc %d" % i, ttl=60)
        return await dht_io.fetch_evidence(dht, ROOT, **kw)

    seen = {hashlib.sha256(b"doc 0").hexdigest()}
    got = asyncio.run(fetch(skip=lambda publisher, digest: digest in seen or publisher == publishers[1], limit=3))
    assert len(got) == 3 and not {publishers[0], publishers[1]} & set(got)
    assert all(document.startswith(b"doc ") for _, document in got.values())


@pytest.mark.parametrize("call", [
    lambda dht: dht_io.fetch_records(dht, ROOT, 30, timeout=0.05),
    lambda dht: dht_io.announce(dht, ROOT, valid.record(), ttl=10, timeout=0.05),
    lambda dht: dht_io.peer_count(dht, timeout=0.05),
    lambda dht: dht_io.fetch_evidence(dht, ROOT, timeout=0.05),
    lambda dht: dht_io.publish_evidence(dht, ROOT, valid.NODE.peer_id, b"doc", ttl=10, timeout=0.05),
])
def test_a_dht_that_never_answers_is_a_timeout_not_a_hang(call: Any) -> None:
    started = time.monotonic()
    with pytest.raises(DHTTimeout, match="did not answer"):
        asyncio.run(call(_DHT(dead=True)))
    assert time.monotonic() - started < 5


def test_drops_are_exported_by_kind_at_each_scrape() -> None:
    metrics = NodeMetrics()

    def exported() -> dict[str, float]:
        return {s.labels["kind"]: s.value for family in metrics.registry.collect() for s in family.samples
                if s.name == "swarmlm_untrusted_dropped_total"}

    before = exported()
    assert set(before) >= set(untrusted.KINDS)
    untrusted.dropped("checkpoint", "from a test: not a note")
    assert exported()["checkpoint"] == before["checkpoint"] + 1 == untrusted.snapshot()["checkpoint"]


def test_peer_id_names_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DHT process names the peers in every lookup answer; the same few come back, each encoded once."""
    from hivemind.p2p import PeerID
    from hivemind.p2p.p2p_daemon_bindings import datastructures

    ids = [Identity.generate().peer_id for _ in range(3)]
    monkeypatch.setattr(datastructures, "base58", datastructures.base58)  # undone after the test
    dht_io._remember_peer_id_names()
    for _ in range(4):
        assert [PeerID.from_base58(p).to_base58() for p in ids] == ids
    info = datastructures.base58.b58encode.cache_info()
    assert (info.misses, info.hits, info.maxsize) == (3, 9, 4096)
