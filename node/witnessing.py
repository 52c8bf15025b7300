"""Witnessing peers' ledgers: every node checks that the others' logs only ever grow.

Each round it reads the checkpoints peers put in their DHT records, asks each peer for a
consistency proof from the last checkpoint this node saw of it, and cosigns consistent ones
(a `witness` entry in its own ledger). Two signed checkpoints of one peer that no append-only
log can produce are kept as fork evidence and reported loudly. A proof that fails is fetched
again before anything is recorded, since the proof itself is unsigned and may be corrupt in transit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

from ledger import witness as witnessing
from ledger.errors import LedgerError
from ledger.note import parse as parse_note
from ledger.checkpoint import Checkpoint
from ledger.store import Store
from routing import ledger_rpc
from routing.client import PeerLink
from routing import untrusted
from routing.errors import RoutingError
from routing.records import ServerRecord

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "checkpoint"


class Witness:
    def __init__(self, link: PeerLink, store: Store, own_peer_id: str) -> None:
        self.link, self.store, self.own = link, store, own_peer_id
        self._log_keys: dict[str, bytes] = {}
        self.forks: list[witnessing.ForkEvidence] = []

    async def round(self, records: Iterable[ServerRecord]) -> int:
        """Check every peer that published a checkpoint; returns how many were cosigned."""
        cosigned = 0
        records = list(records)
        self.link.learn(records)
        for record in records:
            note = record.extra.get(CHECKPOINT_KEY)
            if record.peer_id == self.own or not isinstance(note, str):
                continue
            try:
                cosigned += await self._check(record.peer_id, note)
            except (RoutingError, LedgerError) as e:
                if isinstance(e, LedgerError):
                    untrusted.dropped("checkpoint", f"from {record.peer_id}: {e}")
                log.info("could not witness %s: %s", record.peer_id[-8:], e)
        return cosigned

    async def _check(self, peer: str, note: str) -> bool:
        size = Checkpoint.from_text(parse_note(note).text).size
        loop = asyncio.get_running_loop()
        seen = await loop.run_in_executor(None, self.store.witnessed, peer)
        if seen is not None and seen[0] >= size:
            return False
        if peer not in self._log_keys:
            self._log_keys[peer] = (await ledger_rpc.log_keys(self.link, peer)).log_key
        key = self._log_keys[peer]
        proof: list[bytes] = []
        for attempt in range(2):
            proof = await ledger_rpc.consistency(self.link, peer, seen[0], size) if seen else []
            if seen is None or not isinstance(
                    witnessing.check_extension(peer, key, seen[1], note, proof), witnessing.ForkEvidence):
                break
            log.warning("%s's consistency proof failed (attempt %d); fetching it again", peer[-8:], attempt + 1)
        outcome = await asyncio.wrap_future(witnessing.witness(self.store, peer, key, note, proof))
        if outcome.fork is not None:
            self.forks.append(outcome.fork)
            log.error("FORK EVIDENCE against %s: %s — both signed checkpoints are kept in the ledger's forks table",
                      peer, outcome.fork.reason)
            return False
        return outcome.entry_index is not None
