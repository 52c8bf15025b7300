"""The dashboard's view of the nodes' ledgers: fetched over the `swarmlm.ledger` RPC, checked here.

Nothing a node sends is shown as fact before it verifies: its checkpoint against the log key its
identity certified in entry 0, each entry against its signature and place in the log, each
witness's cosignature against the witness key that witness certified, and each `serve` entry's
inclusion proof against the signed checkpoint (`ledger.proofs`, the check `swarmlm ledger
check-proof` runs on the same document, which the dashboard offers for download).

All coroutines run on the swarm client's loop (they use its P2P link); signature checks go to a
worker thread so that loop keeps serving generations.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

from ledger import entries as ledger_entries
from ledger.checkpoint import Checkpoint, open_checkpoint, verify_cosignature
from ledger.entries import Entry, LogKeyEntry, ServeEntry, WitnessEntry
from ledger.errors import LedgerError
from ledger.note import b64encode
from ledger.note import parse as parse_note
from ledger.proofs import FORMAT, check_inclusion_proof
from routing import ledger_rpc
from routing.client import PeerLink
from routing.errors import PeerFailure, RemoteError, RoutingError, StreamClosed

WINDOW = 256  # newest entries read per node: where its recent `serve` and `witness` entries are
PEER_TIMEOUT_S = 10.0  # a node that left still has a record for a while; do not wait on it for long
T = TypeVar("T")


@dataclass
class _Log:
    """What the explorer holds of one node's log: entry 0, the latest checkpoint, the newest entries."""

    peer: str
    first: tuple[bytes, bytes]
    keys: LogKeyEntry
    size: int = 0
    checkpoint: str = ""
    root: bytes = b""
    rows: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    checked: dict[int, Entry | None] = field(default_factory=dict)  # None: the entry failed verification


def _check_entry(log: _Log, index: int) -> Entry | None:
    data, signature = log.rows[index]
    try:
        ledger_entries.verify_signature(log.peer, data, signature)
        at, entry = ledger_entries.decode(data)
        if at != index:
            return None
        ledger_entries.check_in_log(index, entry, log.peer, log.keys)
        return entry
    except LedgerError:
        return None


def unreadable(error: RoutingError | LedgerError) -> str:
    """Why a node's ledger could not be read, in words a person acts on: a node that left keeps its
    record for a while, and dialling it gives a libp2p error nobody should have to decode."""
    if isinstance(error, StreamClosed) or isinstance(error, PeerFailure) and error.reason.startswith("cannot open"):
        return "the node does not answer: it has probably stopped or left the swarm"
    if isinstance(error, RemoteError):
        return f"the node refused: {error.remote_message or error.code}"
    return str(error)


def _serve_json(index: int, entry: ServeEntry) -> dict[str, Any]:
    return {"index": index, "session": entry.session, "client": entry.client, "blocks": list(entry.blocks),
            "tokens": entry.tokens, "steps": entry.steps, "start_ns": entry.start_ns, "end_ns": entry.end_ns,
            "time_ns": entry.time_ns, "receipted": entry.receipt is not None}


class LedgerExplorer:
    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self._logs: dict[str, _Log] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # one reader of a node's log at a time: its window slides
        self._proofs: dict[str, tuple[int, dict[int, dict[str, Any]]]] = {}  # peer -> (tree size, index -> result)

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _refresh(self, peer: str) -> _Log:
        """Entry 0 once, then the latest checkpoint (verified) and whatever newest entries are new.

        Callers hold the peer's lock, so two refreshes never interleave (nor one with reading proofs)."""
        log = self._logs.get(peer)
        if log is None:
            [first] = await ledger_rpc.entries(self.link, peer, 0, 1)
            keys = await self._off_loop(ledger_entries.certified_log_keys, peer, *first)
            log = self._logs.setdefault(peer, _Log(peer, first, keys))
        size, note = await ledger_rpc.checkpoint(self.link, peer)
        checkpoint, _ = await self._off_loop(open_checkpoint, note, peer, log.keys.log_key)
        if checkpoint.size != size or size < log.size:
            raise PeerFailure(peer, f"sent checkpoint size {size} for a signed size {checkpoint.size} "
                                    f"(previously {log.size})")
        start = max(log.size, size - WINDOW)
        fetched = await ledger_rpc.entries(self.link, peer, start, size) if start < size else []
        log.rows.update(enumerate(fetched, start))
        for index in [i for i in log.rows if i < size - WINDOW]:
            del log.rows[index]
            log.checked.pop(index, None)
        log.size, log.checkpoint, log.root = size, note, checkpoint.root
        new = [i for i in log.rows if i not in log.checked]
        log.checked.update(zip(new, await self._off_loop(lambda: [_check_entry(log, i) for i in new])))
        return log

    async def _refresh_all(self, peers: Iterable[str]) -> dict[str, _Log | str]:
        async def one(peer: str) -> _Log | str:
            try:
                async with self._locks.setdefault(peer, asyncio.Lock()):
                    return await asyncio.wait_for(self._refresh(peer), PEER_TIMEOUT_S)
            except asyncio.TimeoutError:
                return f"no answer within {PEER_TIMEOUT_S:.0f}s"
            except (RoutingError, LedgerError) as e:
                return unreadable(e)

        peers = list(peers)
        return dict(zip(peers, await asyncio.gather(*(one(p) for p in peers))))

    async def checkpoints(self, peers: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each node's latest verified checkpoint, and the newest cosignature of it by each witness."""
        logs = await self._refresh_all(peers)
        out: dict[str, dict[str, Any]] = {
            peer: {"error": log} if isinstance(log, str) else
            {"size": log.size, "root": base64.b64encode(log.root).decode(), "checkpoint": log.checkpoint,
             "cosignatures": {}}
            for peer, log in logs.items()}
        for witness in (log for log in logs.values() if isinstance(log, _Log)):
            for index, entry in sorted(witness.checked.items()):
                if isinstance(entry, WitnessEntry) and entry.peer in out and "cosignatures" in out[entry.peer]:
                    cosigned = parse_note(entry.cosigned_note())
                    size = Checkpoint.from_text(cosigned.text).size
                    timestamp = verify_cosignature(cosigned, witness.peer, witness.keys.witness_key)
                    out[entry.peer]["cosignatures"][witness.peer] = {"witness": witness.peer, "size": size,
                                                                     "timestamp": timestamp, "index": index}
        for node in out.values():
            if "cosignatures" in node:
                node["cosignatures"] = sorted(node["cosignatures"].values(), key=lambda c: c["witness"])
        return out

    async def serves(self, peer: str, limit: int = 20, session: str | None = None) -> dict[str, Any]:
        """The node's newest `serve` entries (of one session, if given), each with its inclusion proof checked."""
        async with self._locks.setdefault(peer, asyncio.Lock()):
            try:
                return await asyncio.wait_for(self._serves(peer, limit, session), 3 * PEER_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise PeerFailure(peer, f"its ledger did not answer within {3 * PEER_TIMEOUT_S:.0f}s") from None

    async def _serves(self, peer: str, limit: int, session: str | None) -> dict[str, Any]:
        log = await self._refresh(peer)
        found = [(i, e) for i, e in sorted(log.checked.items(), reverse=True)
                 if isinstance(e, ServeEntry) and session in (None, e.session)][:limit]
        serves = [{**_serve_json(i, e), "proof": await self._proof(log, i)} for i, e in found]
        unverified = sum(1 for e in log.checked.values() if e is None)
        return {"peer_id": peer, "size": log.size, "root": base64.b64encode(log.root).decode(),
                "checkpoint": log.checkpoint, "serves": serves, "unverified_entries": unverified}

    async def _proof(self, log: _Log, index: int) -> dict[str, Any]:
        size, known = self._proofs.get(log.peer, (None, {}))
        if size != log.size:  # proofs are against one checkpoint: a new one needs new proofs
            known = {}
            self._proofs[log.peer] = (log.size, known)
        if index not in known:
            reply = await ledger_rpc.request(self.link, log.peer, "inclusion", index=index, size=log.size)
            path = reply.get("proof")
            if not isinstance(path, list) or not all(isinstance(h, bytes) for h in path):
                raise PeerFailure(log.peer, "sent a malformed inclusion proof")
            data, signature = log.rows[index]
            document = {"format": FORMAT, "peer_id": log.peer, "index": index, "tree_size": log.size,
                        "entry": b64encode(data), "signature": b64encode(signature),
                        "proof": [b64encode(h) for h in path], "checkpoint": log.checkpoint,
                        "log_key_entry": b64encode(log.first[0]), "log_key_signature": b64encode(log.first[1])}
            try:
                await self._off_loop(check_inclusion_proof, document, log.peer)
                result: dict[str, Any] = {"valid": True, "tree_size": log.size, "document": document}
            except LedgerError as e:
                result = {"valid": False, "tree_size": log.size, "error": str(e), "document": document}
            known[index] = result
        return known[index]
