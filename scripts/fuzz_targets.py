"""What the fuzzer (fuzz.py) attacks: every handler of a node and every parser of untrusted values.

Each target turns a case's `random.Random` into a case: valid frames or values built by the real
code (the frames routing/span.py and the SDK send, push grants and step tickets, receipts, server records,
evidence, checkpoint notes), mutated by mutate.Mutator.
  - stream targets return a `Probe`: frames for one stream to the node, sent by the fuzzer's
    client identity or by the peer its push session names as predecessor;
  - parser targets run the parser and return an outcome label; only the parser's documented
    error may escape, anything else (or a parse that breaks its own guarantees) is a failure.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mutate import Mutator
from ledger import canonical, entries, note
from ledger.checkpoint import open_checkpoint
from ledger.errors import EncodingError, LedgerError, NoteError, ReceiptError
from ledger.keys import Identity
from ledger.receipts import make_receipt, open_receipt
from node.step_budget import StepBudget
from routing import wire
from routing.attestation import parse_attestation
from routing.errors import ProtocolError
from routing.evidence import Evidence, EvidenceError
from routing.grants import accept_grant, grant, ring_ticket, ticket
from routing.records import ServerRecord
from tests.hostile import valid
from tests.hostile.attacker import FORWARD, INFERENCE, INFO, LEDGER, PUSH, built, pack


class Failure(Exception):
    """A case broke a guarantee: a crash, an undocumented exception, an invalid value accepted."""


@dataclass
class Context:
    """The node under attack and the fuzzer's identities."""

    root: str
    peer: str  # the node
    span: tuple[int, int]  # the blocks it serves
    hidden: int  # the model's hidden size
    client: Identity  # sends every stream but pushes, and owns the push session
    pusher: str  # the peer the push session names as predecessor
    push_session: str
    ledger_size: int


@dataclass
class Probe:
    handler: str
    payloads: list[bytes]
    hang_up: bool  # the payloads promise bytes that never come: hang up instead of waiting
    sender: str = "client"  # or "pusher"
    frames: int | None = None  # stop reading after this many frames


def _tensor(rng: random.Random, ctx: Context, batch: int, tokens: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    return wire.encode_tensor(torch.randn(batch, tokens, ctx.hidden, generator=generator))


def _sub_span(rng: random.Random, ctx: Context) -> list[int]:
    a, b = ctx.span
    start = rng.randrange(a, b)
    return [start, rng.randrange(start + 1, b + 1)]


def _some(rng: random.Random, frame: dict[str, Any], optional: dict[str, Any]) -> dict[str, Any]:
    """`frame` with each optional field present half the time."""
    return {**frame, **{k: v for k, v in optional.items() if rng.random() < 0.5}}


def _mutated(m: Mutator, frames: list[dict[str, Any]], tail: Sequence[dict[str, Any]] = ()
             ) -> tuple[list[bytes], bool]:
    """Mutate one or two of `frames` (a tenth of the time none), then append `tail` as is."""
    frames = list(frames)
    if m.rng.random() > 0.1:
        for _ in range(m.rng.choice([1, 1, 2])):
            i = m.rng.randrange(len(frames))
            frames[i] = m.document(frames[i])
    return m.frames(frames + list(tail))


# ---- stream targets --------------------------------------------------------------------------------

def info(m: Mutator, ctx: Context, index: int) -> Probe:
    return Probe(INFO, *_mutated(m, [{"type": "info", "v": wire.PROTOCOL_VERSION}]))


def forward(m: Mutator, ctx: Context, index: int) -> Probe:
    rng = m.rng
    tokens = rng.randint(1, 8)
    frame = _some(rng, {"type": "forward", "v": wire.PROTOCOL_VERSION, "root": ctx.root,
                        "hidden": _tensor(rng, ctx, rng.choice([1, 1, 2]), tokens)},
                  {"blocks": _sub_span(rng, ctx), "reply_dtype": rng.choice(list(wire.WIRE_DTYPES)),
                   "last": rng.randint(1, tokens), "attest": rng.random() < 0.5})
    return Probe(FORWARD, *_mutated(m, [frame]))


def inference(m: Mutator, ctx: Context, index: int) -> Probe:
    """An open, steps (the second may rewind), maybe a route, a close; then a valid close, so the
    node ends the stream whatever became of the session."""
    rng = m.rng
    session, blocks = f"fz-{index}", _sub_span(rng, ctx)
    grant_fields = {"grant": grant(ctx.client, session=session, node=ctx.peer, prev=None, next=None, root=ctx.root,
                                   blocks=tuple(blocks)).to_wire(), "next_maddrs": []}
    frames = [_some(rng, {"type": "open", "v": wire.PROTOCOL_VERSION, "root": ctx.root, "session": session,
                          "max_length": 64}, {"blocks": blocks, "reply_dtype": rng.choice(list(wire.WIRE_DTYPES)),
                                              "attest": rng.random() < 0.5, **grant_fields})]
    length = 0
    for _ in range(rng.randint(1, 2)):
        start, tokens = rng.randint(0, length), rng.randint(1, 6)
        frames.append(_some(rng, {"type": "step", "session": session, "step": len(frames) - 1, "start": start,
                                  "hidden": _tensor(rng, ctx, 1, tokens)},
                            {"push": True, "ticket": ticket(ctx.client, session=session, start=start, tokens=tokens,
                                                            batch=1).to_wire()}))
        length = start + tokens
    if rng.random() < 0.3:
        frames.append({"type": "route", "session": session, **grant_fields})
    if rng.random() < 0.2:  # arm a ring (refused unless the node holds the head and serves the last block)
        frames.append(_some(rng, {"type": "ring", "session": session,
                                  "ticket": ring_ticket(ctx.client, session=session, start=length,
                                                        tokens=rng.randint(1, 8)).to_wire()},
                            {"temperature": rng.choice([0.0, 0.7]), "top_k": rng.randint(0, 50),
                             "state": torch.Generator().get_state().numpy().tobytes(), "stop": [2]}))
    receipt = make_receipt(ctx.client, session=session, node=ctx.peer, manifest_root=bytes.fromhex(ctx.root),
                           blocks=tuple(blocks), tokens=length, outputs_digest=bytes(32), time_ns=index)
    frames.append(_some(rng, {"type": "close", "session": session},
                        {"receipt": canonical.pack(receipt.to_wire()), "length": rng.randint(0, length)}))
    return Probe(INFERENCE, *_mutated(m, frames, [{"type": "close", "session": session}]))


def push(m: Mutator, ctx: Context, index: int) -> Probe:
    """Pushes from the push session's named predecessor, half of them with the client's step ticket
    (after the first, the session refuses pushes without one), a few ring tokens; the ping after them is answered
    once they are read, so the probe ends at the first frame back (the pong, or a refusal)."""
    rng = m.rng
    tokens = rng.randint(1, 4)
    pushed = _some(rng, {"type": "push", "client": ctx.client.peer_id, "session": ctx.push_session, "start": 0,
                         "blocks": [0, ctx.span[0]], "hidden": _tensor(rng, ctx, 1, tokens)},
                   {"ticket": ticket(ctx.client, session=ctx.push_session, start=0, tokens=tokens,
                                     batch=1).to_wire()})
    if rng.random() < 0.2:  # a ring's token instead: refused, for the session names no ring
        pushed = {"type": "ring_token", "client": ctx.client.peer_id, "session": ctx.push_session, "start": 0,
                  "token": rng.randint(0, 1 << 16), "blocks": [0, ctx.span[0]],
                  "ring_ticket": ring_ticket(ctx.client, session=ctx.push_session, start=0, tokens=1).to_wire()}
    frames = [{"type": "push_open", "v": wire.PROTOCOL_VERSION}, pushed]
    payloads, hang_up = _mutated(m, frames, [{"type": "ping", "id": index}])
    return Probe(PUSH, payloads, hang_up, sender="pusher", frames=1)


def ledger(m: Mutator, ctx: Context, index: int) -> Probe:
    rng, size = m.rng, ctx.ledger_size
    op = rng.choice(["checkpoint", "entries", "consistency", "inclusion"])
    a = rng.randint(1, size)
    fields = {"checkpoint": {}, "entries": {"start": a - 1, "end": rng.randint(a, min(size, a + 999))},
              "consistency": {"size1": a, "size2": rng.randint(a, size)},
              "inclusion": {"index": a - 1, "size": rng.randint(a, size)}}[op]
    return Probe(LEDGER, *_mutated(m, [{"type": "ledger", "v": wire.PROTOCOL_VERSION, "op": op, **fields}]))


# ---- parser targets --------------------------------------------------------------------------------

def parsed(parse: Callable[[], Any], *documented: type[Exception]) -> str:
    """'ok', or the name of the documented error `parse` raised; any other exception is a Failure."""
    try:
        parse()
    except documented as e:
        return type(e).__name__
    except Exception as e:
        raise Failure(f"{type(e).__name__}: {str(e)[:300]}") from e
    return "ok"


def _bytes_of(m: Mutator, document: Any) -> bytes:
    """A valid document's bytes, corrupted, or the document mutated and re-encoded (canonically
    when it can be, so the schema checks behind decoding run)."""
    if m.rng.random() < 0.4:
        return m.bytes(canonical.pack(document))
    mutant = m.document(document)
    try:
        return canonical.pack(mutant)
    except EncodingError:
        return pack(mutant)


RECORD = valid.record().to_value()
EVIDENCE_BYTES = valid.evidence().to_bytes()
EVIDENCE = canonical.unpack(EVIDENCE_BYTES)
RECEIPT = valid.receipt().to_wire()
SERVE = canonical.unpack(valid.serve_entry_bytes())
NOTE = valid.checkpoint_note()
ATTESTATION = valid.attestation_wire()
GRANT = grant(valid.CLIENT, session="s1", node=valid.NODE.peer_id, prev=valid.CHECKER.peer_id, next=None,
              root=valid.ROOT.hex(), blocks=(10, 20)).to_wire()
TICKET = ticket(valid.CLIENT, session="s1", start=4, tokens=2, batch=1).to_wire()


def check_record(record: ServerRecord | None, num_blocks: int, block: int | None = None) -> None:
    """What a parsed record guarantees its readers (planner, selection, status)."""
    if record is None:
        return
    ok = (0 <= record.start < record.end <= num_blocks and (block is None or record.start <= block < record.end)
          and math.isfinite(record.throughput) and record.throughput > 0
          and all(type(v) is int and v >= 0 for v in (record.active_sessions, record.cache_tokens_left,
                                                      record.max_step_tokens, record.max_session_length))
          and record.max_step_tokens >= 1 and record.max_session_length >= 1)
    if not ok:
        raise Failure(f"an invalid record was accepted: {record!r:.300}")


def record(m: Mutator, ctx: Context, index: int) -> str:
    value = m.document(RECORD) if m.rng.random() < 0.9 else m.hostile()
    peer = valid.NODE.peer_id if m.rng.random() < 0.9 else m.near(valid.NODE.peer_id)
    block = m.rng.randrange(valid.NUM_BLOCKS)
    kept = ServerRecord.from_value(built(peer), built(value), num_blocks=valid.NUM_BLOCKS, block=block)
    check_record(kept, valid.NUM_BLOCKS, block)
    return "kept" if kept is not None else "dropped"


def evidence(m: Mutator, ctx: Context, index: int) -> str:
    return parsed(lambda: Evidence.from_bytes(_bytes_of(m, EVIDENCE)), EvidenceError)


def receipt(m: Mutator, ctx: Context, index: int) -> str:
    return parsed(lambda: open_receipt(_bytes_of(m, RECEIPT)), ReceiptError)


def entry(m: Mutator, ctx: Context, index: int) -> str:
    return parsed(lambda: entries.decode(_bytes_of(m, SERVE)), LedgerError)


def checkpoint(m: Mutator, ctx: Context, index: int) -> str:
    text = m.text(NOTE)
    data = text.encode("utf-8", "surrogatepass") if m.rng.random() < 0.3 else text
    return parsed(lambda: (note.parse(data), open_checkpoint(data, valid.NODE.peer_id, valid.LOG_KEY)), NoteError)


def push_grant(m: Mutator, ctx: Context, index: int) -> str:
    """A push grant, or a step ticket spent by a fresh session's budget (a third of the time)."""
    if m.rng.random() < 1 / 3:
        raw = built(m.document(TICKET) if m.rng.random() < 0.9 else m.hostile())
        return "ticket " + parsed(lambda: StepBudget().spend(raw, client=valid.CLIENT.peer_id, session="s1", start=4,
                                                             shape=(1, 2, ctx.hidden)), ProtocolError)
    obj = built(m.document(GRANT) if m.rng.random() < 0.9 else m.hostile())
    return parsed(lambda: accept_grant(obj, client=valid.CLIENT.peer_id, session="s1", node=valid.NODE.peer_id,
                                        root=valid.ROOT.hex(), blocks=(10, 20)), ProtocolError)


def attestation(m: Mutator, ctx: Context, index: int) -> str:
    obj = built(m.document(ATTESTATION) if m.rng.random() < 0.9 else m.hostile())
    found: list[Any] = []
    outcome = parsed(lambda: found.append(parse_attestation(obj)))
    return outcome if outcome != "ok" or found[0] is not None else "None"


def evidence_index(m: Mutator) -> Any:
    """What a publisher may put under the evidence key: a valid index, mutated."""
    index = {"digest": hashlib.sha256(EVIDENCE_BYTES).hexdigest(), "chunks": 1, "size": len(EVIDENCE_BYTES)}
    return m.document(index) if m.rng.random() < 0.9 else m.hostile()


STREAMS: dict[str, Callable[[Mutator, Context, int], Probe]] = {
    "info": info, "forward": forward, "inference": inference, "push": push, "ledger": ledger}
PARSERS: dict[str, Callable[[Mutator, Context, int], str]] = {
    "record": record, "evidence": evidence, "receipt": receipt, "entry": entry, "checkpoint": checkpoint,
    "grant": push_grant, "attestation": attestation}
