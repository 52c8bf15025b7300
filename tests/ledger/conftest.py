"""Fixtures for the ledger tests: identities, entries and real ledger files in tmp_path."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from ledger.entries import LoadEntry, ServeEntry
from ledger.keys import Identity
from ledger.receipts import make_receipt
from ledger.store import Store

ROOT = hashlib.sha256(b"model").digest()
T0 = 1_700_000_000_000_000_000


def load_entry(i: int = 0) -> LoadEntry:
    return LoadEntry(
        manifest_root=ROOT,
        blocks=(i % 30, i % 30 + 2),
        shard_digests=(hashlib.sha256(b"%d" % i).digest(), hashlib.sha256(b"%d+" % i).digest()),
        device="cpu",
        dtype="float32",
        time_ns=T0 + i,
    )


def serve_entry(
    node: Identity, client: Identity | None, session: str, blocks: tuple[int, int], time_ns: int = T0
) -> ServeEntry:
    """A serve entry; with a valid receipt signed by `client` unless it is None (unreceipted)."""
    client_peer = (client or Identity(bytes(32))).peer_id
    receipt = (
        None
        if client is None
        else make_receipt(
            client,
            session=session,
            node=node.peer_id,
            manifest_root=ROOT,
            blocks=blocks,
            tokens=7,
            outputs_digest=hashlib.sha256(session.encode()).digest(),
            time_ns=time_ns,
        )
    )
    return ServeEntry(
        session=session,
        client=client_peer,
        manifest_root=ROOT,
        blocks=blocks,
        tokens=7,
        steps=7,
        start_ns=time_ns - 10,
        end_ns=time_ns,
        steps_digest=hashlib.sha256(b"steps").digest(),
        receipt=receipt,
        time_ns=time_ns,
    )


@pytest.fixture(scope="session")
def samples() -> SimpleNamespace:
    """Entry builders, as a fixture so test modules need not import this conftest."""
    return SimpleNamespace(load=load_entry, serve=serve_entry, ROOT=ROOT, T0=T0)


@pytest.fixture
def identity() -> Identity:
    return Identity.generate()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def store(ledger_path: Path, identity: Identity) -> Iterator[Store]:
    s = Store(ledger_path, identity, time_ns=T0)
    yield s
    s.close()


@pytest.fixture
def filled(store: Store) -> Callable[[int], Store]:
    """Append n load entries (in one go, so they share batches) and return the store."""

    def fill(n: int) -> Store:
        futures = [store.append(load_entry(i)) for i in range(n)]
        for f in futures:
            f.result(30)
        return store

    return fill
