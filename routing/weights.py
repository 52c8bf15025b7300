"""Which weights a client routes through: its model's own, and quantized stores derived from it.

Nodes serving a quantized store announce it under the model's (base) root with its scheme, group
size and the derived store's own root. Quantizing is deterministic, so the client does not take
that root on trust: for each scheme it accepts it derives the store itself from the base it holds
(once; cached under $SWARMLM_HOME/models/derived) and admits only nodes announcing exactly that
root. Attestations, receipts and spot checks then name and recompute those weights.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

from shards.derive import derived_store
from shards.errors import ShardsError
from shards.manifest import Quantization
from shards.store import ShardStore

from . import untrusted
from .records import ServerRecord

log = logging.getLogger(__name__)
DEFAULT_ACCEPTED = ("int8",)  # int8 stays within the spot checks' float tolerance of the base; 4-bit only when asked


class AcceptedWeights:
    def __init__(self, base: ShardStore, accept: Iterable[str] = DEFAULT_ACCEPTED) -> None:
        self.base, self.accept = base, frozenset(accept)
        self.stores: dict[str, ShardStore] = {base.root: base}  # root -> store, for the client's own computation
        self._derived: dict[tuple[str, int], str | None] = {}  # (scheme, group size) -> root (None: cannot derive)

    async def admit(self, records: Iterable[ServerRecord]) -> None:
        """Derive (off the event loop) every accepted scheme the records announce that is not known yet."""
        wanted = {(r.scheme, r.group_size) for r in records if r.scheme in self.accept} - set(self._derived)
        for scheme, group in wanted:
            try:
                quantization = Quantization(scheme, group)
                store = await asyncio.get_running_loop().run_in_executor(None, derived_store, self.base, quantization)
            except ShardsError as e:
                log.warning("cannot derive %s/g%d from %s to check the nodes serving it: %s", scheme, group,
                            self.base.root[:16], e)
                self._derived[(scheme, group)] = None
                continue
            log.info("derived %s/g%d of %s: root %s", scheme, group, self.base.root[:16], store.root[:16])
            self._derived[(scheme, group)] = store.root
            self.stores[store.root] = store

    def accepts(self, record: ServerRecord) -> bool:
        """The node serves the base weights, or a scheme this client accepts under the root it derived."""
        if not record.scheme:
            return not record.weights_root
        if record.scheme not in self.accept:
            return False
        derived = self._derived.get((record.scheme, record.group_size))
        if derived is not None and record.weights_root != derived:
            untrusted.dropped("record", f"{record.peer_id} announces {record.scheme}/g{record.group_size} weights "
                                        f"{record.weights_root[:16]}, which the client derives as {derived[:16]}")
        return derived is not None and record.weights_root == derived
