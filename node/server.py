"""The node daemon's lifecycle: load and verify shards, join the DHT, serve, announce, leave cleanly."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

import hivemind

from ledger import canonical
from ledger.entries import Entry, LoadEntry, ServeEntry
from ledger.errors import LedgerError
from ledger.keys import Identity
from ledger.receipts import Receipt, verify_receipt
from ledger.store import Store
from routing import dht as dht_io
from routing import ledger_rpc, wire
from routing.client import PeerLink
from routing.records import ServerRecord, SignedRecordValidator
from shards.catalog import resolve_model
from shards.store import ShardStore, parse_dtype

from .config import NodeConfig
from .errors import NodeError
from .handlers import Serving
from .ledger_service import LedgerService
from .sessions import NodeSession
from .throughput import cached_throughput
from .witnessing import CHECKPOINT_KEY, Witness

log = logging.getLogger(__name__)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._identity_lock = _lock_identity(config.identity)
        self.identity = Identity.load_or_create(config.identity)
        self.peer_id = self.identity.peer_id
        self.store = ShardStore(resolve_model(config.model))
        self.root = self.store.root
        self.dht: hivemind.DHT | None = None
        self.serving: Serving | None = None
        self.ledger: Store | None = None
        self.state = "joining"
        self.throughput = 0.0
        self.witness: Witness | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then leave cleanly."""
        try:
            await self._start()
            await self._serve(stop)
        finally:
            await self._shutdown()

    async def _start(self) -> None:
        c = self.config
        span = c.block_range
        if span is None:
            raise NodeError("--blocks auto needs the rebalancer (not available yet); give --blocks A:B")
        start, end = span
        n = self.store.manifest.num_blocks
        if end > n:
            raise NodeError(f"--blocks {start}:{end} is outside the model's 0:{n}")
        dtype = parse_dtype(c.dtype)
        loop = asyncio.get_running_loop()
        log.info("loading blocks %d:%d of %s (%s, %s)", start, end, self.root[:16], c.device, c.dtype)
        stack = await loop.run_in_executor(None, self.store.load_blocks, start, end, c.device, dtype)
        self.ledger = None if ledger_disabled(c) else Store(c.ledger, self.identity)
        self._log(LoadEntry(manifest_root=bytes.fromhex(self.root), blocks=(start, end),
                                     shard_digests=tuple(bytes.fromhex(d) for d in
                                                         self.store.manifest.block_digests(start, end)),
                                     device=c.device, dtype=c.dtype, time_ns=time.time_ns()))
        self.throughput = await loop.run_in_executor(None, self._throughput, stack)
        self.serving = Serving(c, self.root, stack, self.peer_id, self._log_session, self._info_extra)
        self.dht = await loop.run_in_executor(None, self._start_dht)
        p2p = await self.dht.replicate_p2p()
        s = self.serving
        handlers = [("swarmlm.info", s.handle_info), ("swarmlm.forward", s.handle_forward),
                    ("swarmlm.inference", s.handle_inference)]
        if self.ledger is not None:
            handlers.append((ledger_rpc.HANDLER, LedgerService(self.ledger, s).handle))
            self.witness = Witness(PeerLink(p2p, request_timeout=30), self.ledger, self.peer_id)
        for name, handler in handlers:
            await p2p.add_binary_stream_handler(name, handler)
        self.state = "online"
        await self._announce()
        for maddr in self.dht.get_visible_maddrs():
            print(f"maddr {maddr}", flush=True)
        print(f"ready {self.peer_id} blocks {start}:{end} root {self.root}", flush=True)

    def _throughput(self, stack: Any) -> float:
        if self.config.throughput != "auto":
            return float(self.config.throughput)
        key = f"{self.root}:{stack.start}:{stack.end}:{self.config.device}:{self.config.dtype}"
        return cached_throughput(self.config.state_dir / "throughput.json", key, stack)

    def _start_dht(self) -> hivemind.DHT:
        c = self.config
        return dht_io.SwarmDHT(
            initial_peers=c.initial_peers or None, start=True, client_mode=False,
            host_maddrs=[f"/ip4/{c.host}/tcp/{c.port}"], identity_path=str(c.identity),
            check_if_identity_free=False,  # hivemind's check parses only RSA keys; we hold a lock instead
            record_validators=[SignedRecordValidator(self.identity.seed)])

    async def _serve(self, stop: asyncio.Event) -> None:
        period = self.config.announce_period
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=period)
            except asyncio.TimeoutError:
                await self._announce()
                await self._witness()

    async def _witness(self) -> None:
        """Check the peers' ledgers; never let a peer's misbehaviour take this node down."""
        if self.witness is None or self.dht is None:
            return
        try:
            records = await dht_io.fetch_records(self.dht, self.root, self.store.manifest.num_blocks)
            await self.witness.round(records.values())
        except Exception as e:
            log.warning("witnessing round failed: %s", e)

    def record(self, checkpoint: str | None = None) -> ServerRecord:
        s = self.serving
        assert s is not None
        return ServerRecord(peer_id=self.peer_id, state=self.state, start=s.stack.start, end=s.stack.end,
                            throughput=round(self.throughput, 2), dtype=wire.dtype_name(s.dtype),
                            device=s.device.type, cache_tokens_left=s.pool.free, version=wire.PROTOCOL_VERSION,
                            name=self.config.public_name, active_sessions=len(s.sessions),
                            extra={CHECKPOINT_KEY: checkpoint} if checkpoint else {})

    async def _announce(self) -> None:
        if self.dht is None or self.serving is None:
            return
        try:
            checkpoint = None
            if self.ledger is not None:
                _, checkpoint = await asyncio.get_running_loop().run_in_executor(None, self.ledger.latest_checkpoint)
            record = self.record(checkpoint)
            ok = await dht_io.announce(self.dht, self.root, record, 2 * self.config.announce_period)
            if not ok:
                log.warning("DHT announcement was not stored by any peer (is the swarm reachable?)")
        except Exception as e:  # the DHT is best-effort: never let it take the node down
            log.warning("DHT announcement failed: %s", e)

    def _info_extra(self) -> dict[str, Any]:
        return {"state": self.state, "name": self.config.public_name, "throughput": round(self.throughput, 2),
                "ledger_size": self.ledger.size() if self.ledger else 0}

    def _log(self, entry: Entry) -> None:
        """Queue an entry for the ledger's writer thread; the serving path never waits for the disk."""
        if self.ledger is not None:
            self.ledger.append(entry)

    def _log_session(self, session: NodeSession, receipt_bytes: bytes | None) -> None:
        """Append the session's `serve` entry; a receipt that does not check out is dropped, not trusted."""
        if self.ledger is None:
            return
        receipt = self._valid_receipt(session, receipt_bytes)
        self._log(ServeEntry(
            session=session.session_id, client=session.client, manifest_root=bytes.fromhex(self.root),
            blocks=(session.stack.start, session.stack.end), tokens=session.tokens, steps=session.steps,
            start_ns=session.opened_ns, end_ns=time.time_ns(), steps_digest=session.steps_digest,
            receipt=receipt, time_ns=time.time_ns()))

    def _valid_receipt(self, session: NodeSession, data: bytes | None) -> Receipt | None:
        if data is None:
            return None
        try:
            receipt = Receipt.from_wire(canonical.unpack(data))
            verify_receipt(receipt)
        except LedgerError as e:
            log.warning("session %s: invalid receipt from %s (%s); logging it unreceipted",
                        session.session_id, session.client[-8:], e)
            return None
        expected = (self.peer_id, session.client, session.session_id, bytes.fromhex(self.root),
                    (session.stack.start, session.stack.end), session.tokens, session.outputs_digest)
        got = (receipt.node, receipt.client, receipt.session, receipt.manifest_root, tuple(receipt.blocks),
               receipt.tokens, receipt.outputs_digest)
        if got != expected:
            log.warning("session %s: receipt from %s does not match what was served; logging it unreceipted",
                        session.session_id, session.client[-8:])
            return None
        return receipt

    async def _shutdown(self) -> None:
        self.state = "offline"
        if self.serving is not None:
            self.serving.draining = True
            await self._announce()
            for session in list(self.serving.sessions.values()):
                self.serving._close(session, None)
            self.serving.executor.shutdown(wait=True)
        if self.dht is not None:
            self.dht.shutdown()
        if self.ledger is not None:
            self.ledger.close()
        log.info("node %s stopped", self.peer_id)



def _lock_identity(path: Path) -> int:
    """Hold an exclusive lock beside the identity: two nodes with one peer ID would confuse the swarm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NodeError(f"the identity {path} is in use by another node on this machine; "
                        "give each node its own --identity or --state-dir") from None
    return fd


def ledger_disabled(config: NodeConfig) -> bool:
    """`--ledger off` runs without a ledger: only for measuring what the ledger costs."""
    return str(config.ledger) == "off"
