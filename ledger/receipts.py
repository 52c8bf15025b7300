"""Client receipts: the client's signed statement of what a node served it in one session.

A node logs a session's `serve` entry with the receipt attached, so the entry is backed by the
client's signature and not only the node's word. The client keeps its own receipts too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import canonical, keys
from ledger.errors import EncodingError, ReceiptError
from ledger.keys import Identity
from ledger.schema import BLOCKS, DIGEST, PEER_ID, SIGNATURE, TEXT, UINT, SignedRecord, added, spec


@dataclass(frozen=True)
class Receipt(SignedRecord):
    """What the client saw: session, serving node, model, blocks, tokens (computed, and kept when
    speculation rolled some back) and outputs digest."""

    name = "receipt"

    session: str = spec(TEXT)
    node: str = spec(PEER_ID)
    client: str = spec(PEER_ID)
    manifest_root: bytes = spec(DIGEST)
    blocks: tuple[int, int] = spec(BLOCKS)
    tokens: int = spec(UINT)
    outputs_digest: bytes = spec(DIGEST)
    time_ns: int = spec(UINT)
    signature: bytes = spec(SIGNATURE)
    accepted_tokens: int | None = added(UINT)


def make_receipt(
    identity: Identity,
    *,
    session: str,
    node: str,
    manifest_root: bytes,
    blocks: tuple[int, int],
    tokens: int,
    outputs_digest: bytes,
    time_ns: int,
    accepted_tokens: int | None = None,
) -> Receipt:
    """Sign a receipt as the client `identity`."""
    return Receipt(
        session=session,
        node=node,
        client=identity.peer_id,
        manifest_root=manifest_root,
        blocks=tuple(blocks),
        tokens=tokens,
        outputs_digest=outputs_digest,
        time_ns=time_ns,
        signature=bytes(64),
        accepted_tokens=accepted_tokens,
    ).signed(identity, keys.RECEIPT)


def verify_receipt(receipt: Receipt) -> None:
    """Raise ReceiptError unless the receipt is signed by the client it names."""
    if not keys.verify(receipt.client, keys.RECEIPT, receipt.signed_bytes(), receipt.signature):
        raise ReceiptError(
            f"receipt for session {receipt.session!r} is not signed by client {receipt.client}; "
            "log the session as unreceipted instead"
        )


def open_receipt(data: Any) -> Receipt:
    """A receipt as a peer sent it (canonical bytes), well-formed and signed by the client it names.

    Anything else, whatever its shape, is a ReceiptError: the caller logs the session unreceipted.
    """
    try:
        receipt = Receipt.from_wire(canonical.unpack(data))
    except EncodingError as e:
        raise ReceiptError(f"malformed receipt ({e}); log the session as unreceipted instead") from None
    verify_receipt(receipt)
    return receipt
