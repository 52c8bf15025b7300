"""The `swarmlm.ledger` RPC, client side: a peer's checkpoint, entries and proofs, for witnesses and audits.

Requests are one frame `{type: ledger, v, op, ...}`; the reply is `{type: ledger, ...}` or an error.
  op=checkpoint                 → {size, checkpoint}        (the latest signed checkpoint note)
  op=entries   start, end       → {entries: [[data, sig]]}  (at most MAX_ENTRIES per request)
  op=consistency size1, size2   → {proof: [hash]}
  op=inclusion index, size      → {proof: [hash], entry: [data, sig]}
"""

from __future__ import annotations

from typing import Any

from ledger.entries import LogKeyEntry, certified_log_keys
from ledger.verify import audit_entries

from . import wire
from .client import PeerLink
from .errors import PeerFailure

MAX_ENTRIES = 1000
HANDLER = "swarmlm.ledger"


async def request(client: PeerLink, peer: str, op: str, **fields: Any) -> dict[str, Any]:
    return await client.request(peer, HANDLER, {"type": "ledger", "v": wire.PROTOCOL_VERSION, "op": op, **fields})


async def checkpoint(client: PeerLink, peer: str) -> tuple[int, str]:
    reply = await request(client, peer, "checkpoint")
    return _typed(peer, reply, "size", int), _typed(peer, reply, "checkpoint", str)


async def entries(client: PeerLink, peer: str, start: int, end: int) -> list[tuple[bytes, bytes]]:
    """Entries [start, end) as (bytes, signature), fetched in pages."""
    out: list[tuple[bytes, bytes]] = []
    while start < end:
        stop = min(end, start + MAX_ENTRIES)
        page = _typed(peer, await request(client, peer, "entries", start=start, end=stop), "entries", list)
        if len(page) != stop - start or not all(_is_pair(p) for p in page):
            raise PeerFailure(peer, f"sent {len(page)} malformed entries for [{start}, {stop})")
        out.extend((bytes(d), bytes(s)) for d, s in page)
        start = stop
    return out


async def consistency(client: PeerLink, peer: str, size1: int, size2: int) -> list[bytes]:
    proof = _typed(peer, await request(client, peer, "consistency", size1=size1, size2=size2), "proof", list)
    if not all(isinstance(h, bytes) for h in proof):
        raise PeerFailure(peer, "sent a malformed consistency proof")
    return proof


async def log_keys(client: PeerLink, peer: str) -> LogKeyEntry:
    """The checkpoint/witness keys `peer` certified in its entry 0, checked against its peer ID."""
    [(data, signature)] = await entries(client, peer, 0, 1)
    return certified_log_keys(peer, data, signature)


async def audit(client: PeerLink, peer: str) -> tuple[int, str]:
    """Fetch a peer's whole log and verify every entry and the tree against its latest checkpoint."""
    size, note = await checkpoint(client, peer)
    fetched = await entries(client, peer, 0, size)
    audit_entries(iter(fetched), note, peer)
    return size, note


def _is_pair(p: Any) -> bool:
    return isinstance(p, list) and len(p) == 2 and all(isinstance(x, bytes) for x in p)


def _typed(peer: str, reply: dict[str, Any], name: str, kind: type) -> Any:
    value = reply.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PeerFailure(peer, f"ledger reply lacks a valid {name!r}")
    return value


