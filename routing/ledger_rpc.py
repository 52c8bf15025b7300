"""The `swarmlm.ledger` RPC, client side: a peer's checkpoint, entries and proofs, for witnesses and audits.

Requests are one frame (protocol.LedgerRequest); the reply is a protocol.LedgerReply or an error.
A malformed reply, or one without the fields its op asked for, is a PeerFailure (and a dropped
frame in `untrusted`).
  op=checkpoint                 → {size, checkpoint}        (the latest signed checkpoint note)
  op=entries   start, end       → {entries: [[data, sig]]}  (at most MAX_LEDGER_ENTRIES per request)
  op=consistency size1, size2   → {proof: [hash]}
  op=inclusion index, size      → {proof: [hash], entry: [data, sig]}
"""

from __future__ import annotations

from typing import Any, NoReturn

from ledger.checkpoint import open_checkpoint
from ledger.entries import LogKeyEntry, certified_log_keys
from ledger.verify import audit_entries

from . import protocol, untrusted
from .client import PeerLink
from .errors import PeerFailure, ProtocolError


async def request(client: PeerLink, peer: str, op: str, **fields: Any) -> dict[str, Any]:
    """The reply's map as it came (an error frame raised as RemoteError); `_reply` reads it."""
    return await client.request(peer, protocol.LEDGER, protocol.LedgerRequest(op, **fields).to_wire())


async def checkpoint(client: PeerLink, peer: str) -> tuple[int, str]:
    reply = await _reply(client, peer, "checkpoint")
    return _field(peer, reply, "size"), _field(peer, reply, "checkpoint")


async def entries(client: PeerLink, peer: str, start: int, end: int) -> list[tuple[bytes, bytes]]:
    """Entries [start, end) as (bytes, signature), fetched in pages."""
    out: list[tuple[bytes, bytes]] = []
    while start < end:
        stop = min(end, start + protocol.MAX_LEDGER_ENTRIES)
        page = _field(peer, await _reply(client, peer, "entries", start=start, end=stop), "entries")
        if len(page) != stop - start:
            _refuse(peer, f"sent {len(page)} entries for [{start}, {stop})")
        out.extend((data, signature) for data, signature in page)
        start = stop
    return out


async def consistency(client: PeerLink, peer: str, size1: int, size2: int) -> list[bytes]:
    return _field(peer, await _reply(client, peer, "consistency", size1=size1, size2=size2), "proof")


async def log_keys(client: PeerLink, peer: str) -> LogKeyEntry:
    """The checkpoint/witness keys `peer` certified in its entry 0, checked against its peer ID."""
    [(data, signature)] = await entries(client, peer, 0, 1)
    return certified_log_keys(peer, data, signature)


async def audit(client: PeerLink, peer: str) -> tuple[int, str]:
    """Fetch a peer's whole log and verify every entry and the tree against its latest checkpoint.

    The checkpoint's signature and size are checked first (against the log key the peer's entry 0
    certifies), so a peer cannot keep the auditor paging through a size it never signed."""
    size, note = await checkpoint(client, peer)
    signed, _ = open_checkpoint(note, peer, (await log_keys(client, peer)).log_key)
    if signed.size != size:
        _refuse(peer, f"sent checkpoint size {size} for a signed size {signed.size}")
    fetched = await entries(client, peer, 0, size)
    audit_entries(iter(fetched), note, peer)
    return size, note


async def _reply(client: PeerLink, peer: str, op: str, **fields: Any) -> protocol.LedgerReply:
    try:
        return protocol.LedgerReply.read(await request(client, peer, op, **fields))
    except ProtocolError as e:
        _refuse(peer, f"its ledger reply: {e}")


def _field(peer: str, reply: protocol.LedgerReply, name: str) -> Any:
    """A field the request's op needs in the reply."""
    value = getattr(reply, name)
    if value is None:
        _refuse(peer, f"its ledger reply has no {name!r}")
    return value


def _refuse(peer: str, reason: str) -> NoReturn:
    untrusted.dropped("frame", f"from {peer}: {reason}")
    raise PeerFailure(peer, reason)
