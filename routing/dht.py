"""Reading and writing SwarmLM records in a hivemind DHT.

The DHT runs in its own process; these coroutines are shipped there with `run_coroutine`, so
they are module-level functions (picklable) and return plain data.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from functools import partial
from typing import Any

import hivemind
from hivemind.utils import get_dht_time

from .records import ServerRecord, block_key


class SwarmDHT(hivemind.DHT):
    """hivemind's DHT process, made to die with its parent.

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
