"""The `swarmlm.ledger` RPC, client side: a peer's checkpoint, entries and proofs, for witnesses and audits.

Requests are one frame (protocol.LedgerRequest); the reply is `{type: ledger, ...}` or an error,
checked field by field: a malformed reply is a PeerFailure (and a dropped frame in `untrusted`).
  op=checkpoint                 → {size, checkpoint}        (the latest signed checkpoint note)
  op=entries   start, end       → {entries: [[data, sig]]}  (at most MAX_ENTRIES per request)
  op=consistency size1, size2   → {proof: [hash]}
  op=inclusion index, size      → {proof: [hash], entry: [data, sig]}
"""

from __future__ import annotations

from typing import Any, NoReturn

from ledger import canonical
from ledger.checkpoint import open_checkpoint
from ledger.entries import LogKeyEntry, certified_log_keys
from ledger.note import MAX_NOTE_SIZE
from ledger.schema import DIGEST, SIGNATURE, FieldType
from ledger.verify import audit_entries

from . import protocol, untrusted
from .client import PeerLink
from .errors import PeerFailure

MAX_ENTRIES = 1000
MAX_PROOF = 128  # a consistency proof between trees of up to 2^63 entries has at most 2 * 63 hashes


def _is_entry(p: Any) -> bool:
    return (type(p) is list and len(p) == 2 and type(p[0]) is bytes and len(p[0]) <= canonical.MAX_SIZE
            and SIGNATURE.check(p[1]))


SIZE = FieldType("a tree size in 0..2^63-1", lambda v: type(v) is int and 0 <= v < 1 << 63)
NOTE = FieldType(f"a note of 1 to {MAX_NOTE_SIZE} characters", lambda v: type(v) is str and 0 < len(v) <= MAX_NOTE_SIZE)
ENTRIES = FieldType(f"a list of at most {MAX_ENTRIES} [entry, signature] pairs",
                    lambda v: type(v) is list and len(v) <= MAX_ENTRIES and all(map(_is_entry, v)))
PROOF = FieldType(f"a list of at most {MAX_PROOF} 32-byte hashes",
                  lambda v: type(v) is list and len(v) <= MAX_PROOF and all(map(DIGEST.check, v)))


async def request(client: PeerLink, peer: str, op: str, **fields: Any) -> dict[str, Any]:
    return await client.request(peer, protocol.LEDGER, protocol.LedgerRequest(op, **fields).to_wire())


async def checkpoint(client: PeerLink, peer: str) -> tuple[int, str]:
    reply = await request(client, peer, "checkpoint")
    return _field(peer, reply, "size", SIZE), _field(peer, reply, "checkpoint", NOTE)


async def entries(client: PeerLink, peer: str, start: int, end: int) -> list[tuple[bytes, bytes]]:
    """Entries [start, end) as (bytes, signature), fetched in pages."""
    out: list[tuple[bytes, bytes]] = []
    while start < end:
        stop = min(end, start + MAX_ENTRIES)
        page = _field(peer, await request(client, peer, "entries", start=start, end=stop), "entries", ENTRIES)
        if len(page) != stop - start:
            _refuse(peer, f"sent {len(page)} entries for [{start}, {stop})")
        out.extend((data, signature) for data, signature in page)
        start = stop
    return out


async def consistency(client: PeerLink, peer: str, size1: int, size2: int) -> list[bytes]:
    return _field(peer, await request(client, peer, "consistency", size1=size1, size2=size2), "proof", PROOF)


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


def _field(peer: str, reply: dict[str, Any], name: str, field_type: FieldType) -> Any:
    value = reply.get(name)
    if not field_type.check(value):
        _refuse(peer, f"its ledger reply's {name!r} is not {field_type.what}")
    return value


def _refuse(peer: str, reason: str) -> NoReturn:
    untrusted.dropped("frame", f"from {peer}: {reason}")
    raise PeerFailure(peer, reason)
