"""Push grants: a client's signed word on where one node of its chain takes input from and sends output to.

With pushed hops, node i sends its output straight to node i+1. Node i+1 must accept such input
only from the peer the session's client chose as i+1's predecessor: anyone else could inject
hidden states into a stranger's session. The client signs, per node, (session, node, predecessor,
successor, model, blocks); the node keeps the grant with the session and refuses pushes from any
other peer. The client's own peer ID stands for "the client" at either end of the chain.

A grant says who may push, not how much: a predecessor (or a client with an accomplice for one)
could push the same step again and again. So the client also signs each pushed step it starts, a
step ticket (session, seq, start, tokens, batch): it travels with the step from node to node, and
each node computes a pushed step only for a ticket whose `seq` is above every one it has spent in
that session, and only the positions the ticket names (node/step_budget.py).

In ring mode (node/ring.py) the node serving the last block samples each next token itself and
sends it to the node serving the first: those steps start on a node, not at the client. The client
signs one ring ticket (session, seq, start, tokens) for them: each node computes at most one ring
step per position in [start, start + tokens), in order, and none once a later ticket is spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

from ledger import keys
from ledger.errors import EncodingError
from ledger.keys import Identity
from ledger.schema import BLOCKS, DIGEST, PEER_ID, SIGNATURE, TEXT, UINT, SignedRecord, added, spec

from .errors import ErrorCode, ProtocolError


@dataclass(frozen=True)
class PushGrant(SignedRecord):
    name = "push grant"

    client: str = spec(PEER_ID)
    session: str = spec(TEXT)
    node: str = spec(PEER_ID)
    prev: str = spec(PEER_ID)  # who may push input to `node` (the client itself: nobody but the client)
    next: str = spec(PEER_ID)  # where `node` pushes its output (the client itself: reply only)
    manifest_root: bytes = spec(DIGEST)
    blocks: tuple[int, int] = spec(BLOCKS)
    time_ns: int = spec(UINT)
    signature: bytes = spec(SIGNATURE)

    def is_signed(self) -> bool:
        return keys.verify(self.client, keys.PUSH_GRANT, self.signed_bytes(), self.signature)


def grant(identity: Identity, *, session: str, node: str, prev: str | None, next: str | None, root: str,
          blocks: tuple[int, int]) -> PushGrant:
    """The client's grant for `node`; None for `prev`/`next` means the client itself."""
    me = identity.peer_id
    return PushGrant(client=me, session=session, node=node, prev=prev or me, next=next or me,
                     manifest_root=bytes.fromhex(root), blocks=blocks, time_ns=time.time_ns(),
                     signature=bytes(64)).signed(identity, keys.PUSH_GRANT)


def accept_grant(obj: Any, *, client: str, session: str, node: str, root: str, blocks: tuple[int, int]) -> PushGrant:
    """A grant from an open or route frame: well formed, signed by the stream's client, about this session."""
    try:
        g = PushGrant.from_wire(obj)
    except (EncodingError, TypeError, ValueError):
        raise ProtocolError(ErrorCode.BAD_FRAME, "'grant' is not a well-formed push grant") from None
    if (g.client, g.session, g.node, g.manifest_root, g.blocks) != (client, session, node, bytes.fromhex(root),
                                                                    blocks) or not g.is_signed():
        raise ProtocolError(ErrorCode.BAD_FRAME, "the push grant is not this client's signed grant for this "
                                                 "session, node and span")
    return g


@dataclass(frozen=True)
class StepTicket(SignedRecord):
    name = "step ticket"

    client: str = spec(PEER_ID)
    session: str = spec(TEXT)
    seq: int = spec(UINT)  # above every earlier ticket of the session: each is spent once per node
    start: int = spec(UINT)
    tokens: int = spec(UINT)
    batch: int = spec(UINT)
    signature: bytes = spec(SIGNATURE)

    def is_signed(self) -> bool:
        return keys.verify(self.client, keys.STEP_TICKET, self.signed_bytes(), self.signature)


_seq = 0  # the last seq this process signed


def ticket(identity: Identity, *, session: str, start: int, tokens: int, batch: int) -> StepTicket:
    """The client's ticket for one step, pushed or relayed. Its `seq` grows with time (so tickets signed after a
    failover re-planned the chain stay above those the nodes have spent) and never repeats."""
    return StepTicket(client=identity.peer_id, session=session, seq=_next_seq(), start=start, tokens=tokens,
                      batch=batch, signature=bytes(64)).signed(identity, keys.STEP_TICKET)


def _next_seq() -> int:
    global _seq
    _seq = max(time.time_ns(), _seq + 1)
    return _seq


def accept_ticket(obj: Any, *, client: str, session: str) -> StepTicket:
    """A ticket from a step or push frame: well formed, and signed by the session's client for it."""
    return _accepted(StepTicket, obj, client, session, "ticket")


T = TypeVar("T", "StepTicket", "RingTicket")


def _accepted(kind: type[T], obj: Any, client: str, session: str, field_name: str) -> T:
    try:
        t = kind.from_wire(obj)
    except (EncodingError, TypeError, ValueError):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"'{field_name}' is not a well-formed {kind.name}") from None
    if (t.client, t.session) != (client, session) or not t.is_signed():
        raise ProtocolError(ErrorCode.PUSH_REFUSED, f"the {kind.name} is not signed by this session's client for it")
    return t


@dataclass(frozen=True)
class RingTicket(SignedRecord):
    name = "ring ticket"

    client: str = spec(PEER_ID)
    session: str = spec(TEXT)
    seq: int = spec(UINT)  # from the step tickets' sequence: a later step or ring ticket ends this ring
    start: int = spec(UINT)  # the first position the ring may sample and compute
    tokens: int = spec(UINT)  # how many positions it may run, one at a time or with drafts after it
    signature: bytes = spec(SIGNATURE)
    drafts: int | None = added(UINT)  # the most drafts a step may carry after its sampled token (None: 0)

    @property
    def end(self) -> int:
        return self.start + self.tokens

    def is_signed(self) -> bool:
        return keys.verify(self.client, keys.RING_TICKET, self.signed_bytes(), self.signature)


def ring_ticket(identity: Identity, *, session: str, start: int, tokens: int, drafts: int = 0) -> RingTicket:
    """The client's ticket for a ring over positions [start, start + tokens), its steps carrying up to
    `drafts` drafted tokens each."""
    return RingTicket(client=identity.peer_id, session=session, seq=_next_seq(), start=start, tokens=tokens,
                      signature=bytes(64), drafts=drafts or None).signed(identity, keys.RING_TICKET)


def accept_ring_ticket(obj: Any, *, client: str, session: str) -> RingTicket:
    """A ring ticket from a frame: well formed, and signed by the session's client for it."""
    return _accepted(RingTicket, obj, client, session, "ring_ticket")
