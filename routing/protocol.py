"""Every handler and every frame of the wire protocol, declared once; node and client both use these.

Each frame is a frozen dataclass whose fields declare their wire form (`ledger.schema.spec`).
`parse` reads a frame from a peer that may run a newer version: keys this version does not know
are ignored, absent optional fields keep their default, and a missing or mistyped field is
`ProtocolError(BAD_FRAME)` naming it. `to_wire` builds the msgpack map (None fields left out).
What depends on the receiver (its span, its limits, a session's length) is checked where the
frame is handled: tensors are decoded by `wire.decode_tensor` against the node's limits, grants
and step tickets by `routing.grants.accept_grant`/`accept_ticket`, attestations by
`routing.attestation.parse_attestation`.

    swarmlm.info       Info                                     ← InfoReply (Serving.info)
    swarmlm.forward    Forward                                  ← Result
    swarmlm.inference  Open                                     ← Opened
                       Step                                     ← Result (and PushFailed notices)
                       Route                                    ← Routed
                       Ring                                     ← (the ring's steps' Results)
                       Close                                    ← Closed
    swarmlm.push       PushOpen, then Push or RingToken         ← nothing, or an Error naming the session
                       Ping                                     ← Pong
    swarmlm.ledger     LedgerRequest                            ← LedgerReply (routing/ledger_rpc.py)
    swarmlm.dialback   Dialback                                 ← DialedBack (routing/reachability.py)
    any                                                         ← Error

The first frame of each stream carries `v` = PROTOCOL_VERSION (`opening`).

Steps carry no step id (clients before this version sent a `step` count no node read; a node
ignores it as any unknown key). A step id would be the client's word only, so a node could not
trust it to catch a replay, and the client already sees every duplicate without one:
- a relayed step reaches the node only on its client's own stream; the node numbers the session's
  steps itself and signs that number into each step's attestation, which the client checks
  against its own count (`SpanSession.steps`), so a step computed twice shows there;
- a pushed step comes from another peer, so it carries its client's signed step ticket instead
  (`ticket`, routing/grants.py): its `seq` is the step's id, spent once per node
  (node/step_budget.py), and a replayed or altered push is `push_refused`, never computed. A
  session asks for that with `tickets: true` when it opens.
Results carry the node's `step` number and their `start`, so the client counts even the results
it drops at a re-route as the node counted them (`SpanSession.settle`).

Ring mode (node/ring.py, routing/ring.py): a `ring` frame arms the node serving the last block with
the client's signed ring ticket and sampler; after each step it samples the next token and sends it
(`ring_token`) to the node serving the first block, which embeds it and pushes on. Ring steps carry
the ring ticket instead of a step ticket, and their results name it (`ring`) and the token sampled
or embedded (`token`), which the client checks against its own head.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Mapping, TypeVar

from ledger import canonical
from ledger.errors import EncodingError
from ledger.note import MAX_NOTE_SIZE
from ledger.schema import DIGEST, SIGNATURE, FieldType, brief, open_fields, spec

from .errors import ErrorCode, PeerFailure, ProtocolError, RemoteError
from .records import MADDRS
from .wire import PROTOCOL_VERSION, WIRE_DTYPES

INFO, FORWARD, INFERENCE = "swarmlm.info", "swarmlm.forward", "swarmlm.inference"
PUSH, LEDGER, DIALBACK = "swarmlm.push", "swarmlm.ledger", "swarmlm.dialback"
# one-shot requests' reply frame types
REPLY_TYPES = {INFO: "info", FORWARD: "result", LEDGER: "ledger", DIALBACK: "dialback"}

MAX_INT = (1 << 63) - 1  # what SQLite and every index here hold
MAX_SESSION_ID = 64
MAX_NEXT_MADDRS = 8
MAX_TEXT = 256
MAX_PORTS = 4  # a dial-back tries at most this many of the asker's ports
MAX_SAMPLER_STATE = 8192  # bytes of a torch CPU generator's state (5,056 today)
MAX_STOP_TOKENS = 16
MAX_RING_DRAFTS = 16  # drafts a ring step may carry after its sampled token (speculation in the ring)
MAX_RING_CONTEXT = 4096  # tokens of the text so far a ring's sampler drafts from (the latest ones)
MAX_LEDGER_ENTRIES = 1000  # entries in one ledger reply
MAX_PROOF = 128  # hashes: a consistency proof between trees of up to 2^63 entries has at most 2 * 63


def uint(minimum: int = 0) -> FieldType:
    return FieldType(f"an integer in {minimum}..{MAX_INT}", lambda v: type(v) is int and minimum <= v <= MAX_INT)


def text(max_len: int = MAX_TEXT) -> FieldType:
    return FieldType(f"a string of at most {max_len} characters", lambda v: type(v) is str and len(v) <= max_len)


def maybe(field_type: FieldType) -> FieldType:
    """The type, or None (an optional field an older peer may send as nil)."""
    return FieldType(f"{field_type.what}, or nil", lambda v: v is None or field_type.check(v), field_type.to_wire,
                     lambda v: None if v is None else field_type.from_wire(v))


def _blocks_check(v: Any) -> bool:
    return type(v) is list and len(v) == 2 and all(type(b) is int for b in v) and 0 <= v[0] < v[1] <= MAX_INT


ANY = FieldType("any value (checked by its own parser)", lambda v: True)
BOOL = FieldType("a boolean", lambda v: type(v) is bool)
SESSION = FieldType(f"1..{MAX_SESSION_ID} printable characters",
                    lambda v: type(v) is str and 0 < len(v) <= MAX_SESSION_ID and v.isprintable())
CLIENT = text()  # a peer ID, checked where it is used
ROOT = text(128)
DTYPE = FieldType(f"one of {', '.join(WIRE_DTYPES)}", lambda v: type(v) is str and v in WIRE_DTYPES)
TENSOR = FieldType("a tensor map {dtype, shape, data}", lambda v: type(v) is dict)
BLOCKS = FieldType("a block range [start, end] with 0 <= start < end", _blocks_check, list, tuple)
NEXT_MADDRS = FieldType(f"a list of at most {MAX_NEXT_MADDRS} multiaddrs",
                        lambda v: MADDRS.check(v) and len(v) <= MAX_NEXT_MADDRS)
PORTS = FieldType(f"a list of at most {MAX_PORTS} TCP ports",
                  lambda v: type(v) is list and len(v) <= MAX_PORTS and all(type(p) is int and 0 < p < 65536 for p in v))
TOKEN = FieldType(f"a token id in 0..{(1 << 31) - 1}", lambda v: type(v) is int and 0 <= v < 1 << 31)


def _tokens(limit: int) -> FieldType:
    return FieldType(f"a list of at most {limit} token ids",
                     lambda v: type(v) is list and len(v) <= limit and all(TOKEN.check(t) for t in v))


STOP_TOKENS = _tokens(MAX_STOP_TOKENS)
RING_DRAFTS = _tokens(MAX_RING_DRAFTS)
RING_CONTEXT = _tokens(MAX_RING_CONTEXT)
SAMPLER_STATE = FieldType(f"at most {MAX_SAMPLER_STATE} bytes",
                          lambda v: type(v) is bytes and len(v) <= MAX_SAMPLER_STATE)
PROBABILITY = FieldType("a number in [0, 1]", lambda v: type(v) in (int, float) and 0 <= v <= 1, float, float)
TEMPERATURE = FieldType("a number in [0, 100]", lambda v: type(v) in (int, float) and 0 <= v <= 100, float, float)
MILLISECONDS = FieldType("milliseconds in 0..1e9", lambda v: type(v) in (int, float) and 0 <= v < 1e9)
TREE_SIZE = FieldType("a tree size in 0..2^63-1", lambda v: type(v) is int and 0 <= v < 1 << 63)
NOTE = FieldType(f"a note of 1 to {MAX_NOTE_SIZE} characters",
                 lambda v: type(v) is str and 0 < len(v) <= MAX_NOTE_SIZE)


def _is_entry(v: Any) -> bool:
    return (type(v) is list and len(v) == 2 and type(v[0]) is bytes and len(v[0]) <= canonical.MAX_SIZE
            and SIGNATURE.check(v[1]))


ENTRY = FieldType("an [entry, signature] pair", _is_entry)
ENTRIES = FieldType(f"a list of at most {MAX_LEDGER_ENTRIES} [entry, signature] pairs",
                    lambda v: type(v) is list and len(v) <= MAX_LEDGER_ENTRIES and all(map(_is_entry, v)))
PROOF = FieldType(f"a list of at most {MAX_PROOF} 32-byte hashes",
                  lambda v: type(v) is list and len(v) <= MAX_PROOF and all(map(DIGEST.check, v)))

F = TypeVar("F", bound="Frame")


def named(frame: Mapping[str, Any], key: str, field_type: FieldType) -> Any:
    """A field of a frame that may not parse, if it is valid, else None: what a refusal echoes."""
    value = frame.get(key)
    return value if field_type.check(value) else None


@dataclass(frozen=True)
class Frame:
    """A frame type: `TYPE` is its wire `type`; `OPENS` names the handler whose stream it opens."""

    TYPE: ClassVar[str]
    OPENS: ClassVar[str | None] = None

    @classmethod
    def parse(cls: type[F], frame: Mapping[str, Any]) -> F:
        if frame.get("type") != cls.TYPE:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"expected a '{cls.TYPE}' frame, got {brief(frame.get('type'))}")
        return cls.read(frame)

    @classmethod
    def read(cls: type[F], frame: Mapping[str, Any]) -> F:
        """The fields alone, whatever the map's `type` says (a frame already dispatched on it)."""
        try:
            return cls(**open_fields(cls, frame, f"a '{cls.TYPE}' frame"))
        except EncodingError as e:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"'{cls.TYPE}' frame: field {e}") from None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        if self.OPENS is not None:
            out["v"] = PROTOCOL_VERSION
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and "type" in f.metadata:  # a field without a type is not carried
                out[f.name] = f.metadata["type"].to_wire(value)
        return out


def opening(frame: Mapping[str, Any], cls: type[F]) -> F:
    """The first frame of a stream: a protocol version we speak (checked first, so a newer peer
    learns that rather than a field error), then the expected frame."""
    version = frame.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.VERSION, f"protocol version {brief(version)} is not supported; "
                                               f"this node speaks {PROTOCOL_VERSION}")
    return cls.parse(frame)


def check_reply(peer: str, frame: Mapping[str, Any], expected: str) -> None:
    """A peer's reply must be of type `expected`: its error frame is raised as RemoteError, another
    frame as PeerFailure (the peer broke the protocol)."""
    if frame["type"] == Error.TYPE:
        raise Error.lenient(frame).remote(peer)
    if frame["type"] != expected:
        raise PeerFailure(peer, f"expected a '{expected}' frame, got {brief(frame['type'])}")


def one_of(frame: Mapping[str, Any], kinds: tuple[type[F], ...], where: str) -> F:
    """A frame that must be one of `kinds` (say, the frames of a session)."""
    for kind in kinds:
        if frame.get("type") == kind.TYPE:
            return kind.parse(frame)
    raise ProtocolError(ErrorCode.BAD_FRAME, f"unexpected {brief(frame.get('type'))} frame {where}")


# ---- requests that open a stream -------------------------------------------------------------------

@dataclass(frozen=True)
class Info(Frame):
    TYPE, OPENS = "info", INFO


@dataclass(frozen=True)
class InfoReply(Frame):
    """A node's info map (node/serving.py `info`). The fields a client checks before it routes
    through the node are declared; the rest (load, versions, uptime, …) are for status pages, which
    read them from `raw`, the whole map as received."""

    TYPE = "info"
    v: int = spec(uint())
    peer_id: str = spec(CLIENT)
    root: str = spec(ROOT)
    start: int = spec(uint())
    end: int = spec(uint(1))
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, frame: Mapping[str, Any]) -> "InfoReply":
        return replace(super().parse(frame), raw=dict(frame))


@dataclass(frozen=True)
class Forward(Frame):
    """A stateless pass through the node's span (or `blocks` of it); `last` positions come back."""

    TYPE, OPENS = "forward", FORWARD
    root: str = spec(ROOT)
    hidden: dict[str, Any] = spec(TENSOR)
    blocks: tuple[int, int] | None = spec(maybe(BLOCKS), default=None)
    reply_dtype: str | None = spec(maybe(DTYPE), default=None)
    last: int | None = spec(maybe(uint(1)), default=None)
    attest: bool = spec(BOOL, default=True)


@dataclass(frozen=True)
class Open(Frame):
    """A session on the node's span (or `blocks` of it); a signed `grant` names push neighbours;
    `tickets`: every pushed step of the session carries its client's step ticket."""

    TYPE, OPENS = "open", INFERENCE
    root: str = spec(ROOT)
    session: str = spec(SESSION)
    max_length: int = spec(uint(1))
    batch: int = spec(uint(1), default=1)
    blocks: tuple[int, int] | None = spec(maybe(BLOCKS), default=None)
    reply_dtype: str | None = spec(maybe(DTYPE), default=None)
    attest: bool = spec(BOOL, default=True)
    grant: Any = spec(ANY, default=None)
    next_maddrs: list[str] = spec(NEXT_MADDRS, default_factory=list)
    tickets: bool = spec(BOOL, default=False)


@dataclass(frozen=True)
class PushOpen(Frame):
    TYPE, OPENS = "push_open", PUSH


@dataclass(frozen=True)
class LedgerRequest(Frame):
    """One ledger query; which of the index fields it needs depends on `op`."""

    TYPE, OPENS = "ledger", LEDGER
    op: str = spec(text(40))
    start: int | None = spec(maybe(uint()), default=None)
    end: int | None = spec(maybe(uint()), default=None)
    size1: int | None = spec(maybe(uint()), default=None)
    size2: int | None = spec(maybe(uint()), default=None)
    index: int | None = spec(maybe(uint()), default=None)
    size: int | None = spec(maybe(uint()), default=None)

    def bounded(self, name: str, minimum: int) -> int:
        """Field `name`, which this op needs, at least `minimum`."""
        value = getattr(self, name)
        if value is None:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"ledger op {self.op!r} needs field {name!r}")
        if value < minimum:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"field {name!r} must be in {minimum}..{MAX_INT}, got {value}")
        return value


@dataclass(frozen=True)
class LedgerReply(Frame):
    """The answer to a LedgerRequest: the fields of its op, each optional here (routing/ledger_rpc.py
    requires those it asked for). It keeps its request's type."""

    TYPE = "ledger"
    size: int | None = spec(maybe(TREE_SIZE), default=None)  # checkpoint
    checkpoint: str | None = spec(maybe(NOTE), default=None)  # checkpoint
    entries: list[list[bytes]] | None = spec(maybe(ENTRIES), default=None)  # entries
    proof: list[bytes] | None = spec(maybe(PROOF), default=None)  # consistency, inclusion
    entry: list[bytes] | None = spec(maybe(ENTRY), default=None)  # inclusion


# ---- a session's frames (client → node) ------------------------------------------------------------

@dataclass(frozen=True)
class SessionFrame(Frame):
    """A frame on a session's stream after `open`, naming the session it is about."""

    session: str = spec(SESSION)


@dataclass(frozen=True)
class Step(SessionFrame):
    """Positions [start, start + tokens) of the session; `ticket`: the client's signed step ticket for
    it; `push`: the node forwards its output on, with the ticket."""

    TYPE = "step"
    start: int = spec(uint())
    hidden: dict[str, Any] = spec(TENSOR)
    push: bool = spec(BOOL, default=False)
    ticket: Any = spec(ANY, default=None)


@dataclass(frozen=True)
class Route(SessionFrame):
    """New push neighbours after a failover (a fresh grant)."""

    TYPE = "route"
    grant: Any = spec(ANY, default=None)
    next_maddrs: list[str] = spec(NEXT_MADDRS, default_factory=list)


@dataclass(frozen=True)
class Close(SessionFrame):
    """The end of a session: the client's signed receipt (any value; checked by the node's ledger
    side, and never a reason to skip logging) and the positions the client kept."""

    TYPE = "close"
    receipt: Any = spec(ANY, default=None)
    length: int | None = spec(maybe(uint()), default=None)


@dataclass(frozen=True)
class Ring(SessionFrame):
    """To the node serving the last block: sample the token after each step within the signed ring
    `ticket` and send it to your successor (the node serving the first block), unless it is one of
    `stop` (the answer ends there). Greedy at temperature 0; else the client's sampler, `state` being
    its seeded generator's, so both draw the same. With `max_draft` > 0 it also drafts up to that many
    tokens by prompt lookup over `context` (the text so far, its latest tokens) and what it samples,
    and judges them by the exact acceptance rule when their step comes back (node/ring.py)."""

    TYPE = "ring"
    ticket: Any = spec(ANY)
    temperature: float = spec(TEMPERATURE, default=0.0)
    top_p: float = spec(PROBABILITY, default=1.0)
    top_k: int = spec(uint(), default=0)
    min_p: float = spec(PROBABILITY, default=0.0)
    state: bytes | None = spec(maybe(SAMPLER_STATE), default=None)
    stop: list[int] = spec(STOP_TOKENS, default_factory=list)
    max_draft: int = spec(FieldType(f"an integer in 0..{MAX_RING_DRAFTS}",
                                    lambda v: type(v) is int and 0 <= v <= MAX_RING_DRAFTS), default=0)
    context: list[int] = spec(RING_CONTEXT, default_factory=list)


SESSION_FRAMES: tuple[type[SessionFrame], ...] = (Step, Route, Close, Ring)


# ---- replies (node → client) -----------------------------------------------------------------------

@dataclass(frozen=True)
class Opened(Frame):
    """The session is open; what the node holds it to (for the reader: a client acts on its results)."""

    TYPE = "opened"
    session: str = spec(SESSION)
    max_length: int | None = spec(maybe(uint(1)), default=None)
    dtype: str | None = spec(maybe(DTYPE), default=None)


@dataclass(frozen=True)
class Result(Frame):
    """A step's or forward's output; `step` is the node's index of the step (the attestation's),
    `start` its first position."""

    TYPE = "result"
    hidden: dict[str, Any] = spec(TENSOR)
    step: int | None = spec(maybe(uint()), default=None)
    start: int | None = spec(maybe(uint()), default=None)
    compute_ms: float | None = spec(maybe(MILLISECONDS), default=None)
    attestation: Any = spec(ANY, default=None)
    pushed: bool = spec(BOOL, default=False)
    push_failed: str | None = spec(maybe(text(4096)), default=None)
    ring: int | None = spec(maybe(uint()), default=None)  # the seq of the ring ticket the step ran under
    token: int | None = spec(maybe(TOKEN), default=None)  # ring: the token sampled after it, or embedded for it
    kept: int = spec(uint(), default=0)  # ring: the step's drafts its sampler kept (`token` follows them)
    drafts: list[int] = spec(RING_DRAFTS, default_factory=list)  # ring: the drafts it sent on after `token`


@dataclass(frozen=True)
class Routed(Frame):
    TYPE = "routed"
    session: str = spec(SESSION)


@dataclass(frozen=True)
class Closed(Frame):
    TYPE = "closed"
    session: str = spec(SESSION)
    tokens: int = spec(uint())
    accepted_tokens: int = spec(uint())


@dataclass(frozen=True)
class PushFailed(Frame):
    """The node's push to its successor was refused: the client relays that step itself. `start`
    names the step, so a refusal that arrives a step late is not taken for the next step's."""

    TYPE = "push_failed"
    session: str = spec(SESSION)
    code: str = spec(text(40))
    message: str = spec(text(500))
    start: int | None = spec(maybe(uint()), default=None)


@dataclass(frozen=True)
class Error(Frame):
    """A refusal with a typed code. Pushers' refusals name the session they are about. An error frame
    is read with `lenient`: its text is the peer's to choose, and is shown rather than acted on."""

    TYPE = "error"
    code: str = spec(text(40))
    message: str = spec(text(1 << 16))
    client: str | None = spec(maybe(CLIENT), default=None)
    session: str | None = spec(maybe(SESSION), default=None)
    start: int | None = spec(maybe(uint()), default=None)  # a refused push's first position

    @classmethod
    def of(cls, error: ProtocolError) -> "Error":
        return cls(error.code.value, str(error))

    @classmethod
    def lenient(cls, frame: Mapping[str, Any]) -> "Error":
        """Whatever an error frame says, cut to size; a missing or mistyped field reads as unknown."""
        def cut(key: str, length: int) -> str | None:
            value = frame.get(key)
            return value[:length] if isinstance(value, str) else None

        return cls(cut("code", 40) or "?", cut("message", 500) or "", named(frame, "client", CLIENT),
                   named(frame, "session", SESSION), named(frame, "start", uint()))

    def remote(self, peer: str) -> RemoteError:
        """This refusal, raised by the client that got it from `peer`."""
        return RemoteError(peer, self.code, self.message)


# ---- the push stream (node → node) -----------------------------------------------------------------

@dataclass(frozen=True)
class Push(Frame):
    """A session's step output, pushed by the node serving `blocks` to the one serving the next.
    `blocks` is required of the session's named predecessor only (node/push.py): a push from anyone
    else is `push_refused` whatever it holds, so its client relays instead. `ticket` is the client's
    step ticket, passed on as it came (node/step_budget.py)."""

    TYPE = "push"
    client: str = spec(CLIENT)
    session: str = spec(SESSION)
    start: int = spec(uint())
    hidden: dict[str, Any] = spec(TENSOR)
    blocks: tuple[int, int] | None = spec(maybe(BLOCKS), default=None)
    ticket: Any = spec(ANY, default=None)
    ring_ticket: Any = spec(ANY, default=None)  # a ring step's ring ticket, in place of a step ticket


@dataclass(frozen=True)
class RingToken(Frame):
    """The token sampled for position `start`, sent by the node serving the last block (`blocks`) to
    the one serving the first, which embeds it (and `drafts` after it, speculation's guesses) and
    computes those positions: a ring step (node/ring.py)."""

    TYPE = "ring_token"
    client: str = spec(CLIENT)
    session: str = spec(SESSION)
    start: int = spec(uint())
    token: int = spec(TOKEN)
    blocks: tuple[int, int] = spec(BLOCKS)
    ring_ticket: Any = spec(ANY)
    drafts: list[int] = spec(RING_DRAFTS, default_factory=list)


@dataclass(frozen=True)
class Ping(Frame):
    TYPE = "ping"
    id: int = spec(uint())


@dataclass(frozen=True)
class Pong(Frame):
    TYPE = "pong"
    id: int = spec(uint())


# ---- reachability (node → peer) --------------------------------------------------------------------

@dataclass(frozen=True)
class Dialback(Frame):
    """Dial me back at the address my connection came from, on these ports of mine."""

    TYPE, OPENS = "dialback", DIALBACK
    ports: list[int] = spec(PORTS)


@dataclass(frozen=True)
class DialedBack(Frame):
    """The asker's address as seen ("" over a relay: no dial-back) and the ports that opened."""

    TYPE = "dialback"
    ip: str = spec(text(64), default="")
    open: list[int] = spec(PORTS, default_factory=list)
