"""What nodes announce in the DHT, and the validator that makes announcements unforgeable.

Keys: `swarmlm/<manifest root hex>/block/<i>` holds one record per node serving block i, under
subkey = the node's peer ID. Every record in a SwarmLM DHT must carry an Ed25519 signature by the
peer named in its subkey over (key, subkey, value, expiration) — so no peer can overwrite or
forge another's announcement, and a reader needs nothing but the peer ID to check it.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import msgpack
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils.serializer import MSGPackSerializer
from multiaddr import Multiaddr
from multiaddr.exceptions import Error as MultiaddrError

from ledger import keys
from ledger.bounds import Bounds
from ledger.errors import EncodingError
from ledger.keys import Identity
from ledger.note import MAX_NOTE_SIZE
from ledger.schema import PEER_ID, FieldType, open_fields, spec

from . import untrusted
from .errors import RoutingError

STATES = ("joining", "online", "draining", "offline")
DTYPES = ("float32", "bfloat16", "float16")  # routing.wire.WIRE_DTYPES, named here without importing torch
MAX_BLOCKS = 1 << 16
MAX_THROUGHPUT = 1e6  # tokens/s through a span: far beyond any real node, so no one can claim infinity
MAX_COUNT = 1 << 40  # sessions, cache tokens, step and session lengths
MAX_RTT_MS = 60_000.0
MAX_NEIGHBOURS = 16
MAX_MADDRS, MAX_MADDR = 16, 256
MAX_EXTRA, MAX_KEY = 8, 64
# What any SwarmLM DHT value may be, checked once, in the DHT process, before it is pickled back and walked;
# the parsers that read it after (`ServerRecord.from_value`) look no deeper than their schema does.
VALUE_BOUNDS = Bounds(depth=3, items=256, size=MAX_NOTE_SIZE + (16 << 10), string=MAX_NOTE_SIZE)
_HEX_ROOT = re.compile(r"[0-9a-f]{64}")
_SCHEME = re.compile(r"[a-z0-9_]{0,16}")


class RecordError(RoutingError):
    """A DHT record is malformed; readers drop it (see `ServerRecord.from_value`)."""


def block_key(root: str, block: int) -> str:
    return f"swarmlm/{root}/block/{block}"


def _is_number(v: Any, low: float, high: float) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and low <= v <= high


def _is_text(v: Any, low: int, high: int) -> bool:
    return type(v) is str and low <= len(v) <= high and v.isprintable()


def _is_maddr(v: Any) -> bool:
    if not (_is_text(v, 2, MAX_MADDR) and v.startswith("/")):
        return False
    try:
        Multiaddr(v)
    except (ValueError, MultiaddrError):
        return False
    return True


def _is_rtt_map(v: Any) -> bool:
    return type(v) is dict and len(v) <= MAX_NEIGHBOURS and all(
        PEER_ID.check(k) and _is_number(ms, 0.0, MAX_RTT_MS) for k, ms in v.items())


def _is_scalar(v: Any) -> bool:
    return (v is None or type(v) in (bool, int) or _is_number(v, -math.inf, math.inf)
            or (type(v) in (str, bytes) and len(v) <= MAX_NOTE_SIZE))


def _is_extra(v: Any) -> bool:
    return (type(v) is dict and len(v) <= MAX_EXTRA and type(v.get("checkpoint", "")) is str
            and all(_is_text(k, 1, MAX_KEY) and _is_scalar(x) for k, x in v.items()))


def _count(what: str, least: int = 0) -> FieldType:
    return FieldType(f"{what}: an integer in [{least}, {MAX_COUNT}]",
                     lambda v: type(v) is int and least <= v <= MAX_COUNT)


STATE = FieldType(f"one of {', '.join(STATES)}", lambda v: type(v) is str and v in STATES)
BLOCK = FieldType(f"a block index in [0, {MAX_BLOCKS}]", lambda v: type(v) is int and 0 <= v <= MAX_BLOCKS)
THROUGHPUT = FieldType(f"tokens/s, finite, in (0, {MAX_THROUGHPUT:g}]",
                       lambda v: _is_number(v, 0.0, MAX_THROUGHPUT) and v > 0, from_wire=float)
BATCH_THROUGHPUT = FieldType(f"tokens/s, finite, in [0, {MAX_THROUGHPUT:g}] (0: not measured)",
                             lambda v: _is_number(v, 0.0, MAX_THROUGHPUT), from_wire=float)
DTYPE = FieldType(f"one of {', '.join(DTYPES)}", lambda v: type(v) is str and v in DTYPES)
DEVICE = FieldType("a device of 1 to 32 printable characters", lambda v: _is_text(v, 1, 32))
VERSION = FieldType("a protocol version in [0, 2^31)", lambda v: type(v) is int and 0 <= v < 1 << 31)
NAME = FieldType("a name of at most 64 printable characters", lambda v: _is_text(v, 0, 64))
MADDRS = FieldType(f"a list of at most {MAX_MADDRS} multiaddrs",
                   lambda v: type(v) is list and len(v) <= MAX_MADDRS and all(map(_is_maddr, v)))
RTT_MAP = FieldType(f"a map of at most {MAX_NEIGHBOURS} peer IDs to round trips in [0, {MAX_RTT_MS:g}] ms",
                    _is_rtt_map, from_wire=lambda v: {k: float(ms) for k, ms in v.items()})
EXTRA = FieldType(f"a map of at most {MAX_EXTRA} names to scalars (checkpoint: a note of at most "
                  f"{MAX_NOTE_SIZE} characters)", _is_extra)
SCHEME = FieldType("a quantization scheme name ([a-z0-9_], at most 16), or ''",
                   lambda v: type(v) is str and _SCHEME.fullmatch(v) is not None)
GROUP = FieldType("a quantization group size in [0, 4096]", lambda v: type(v) is int and 0 <= v <= 4096)
RING = FieldType("a boolean", lambda v: type(v) is bool)
CLAIM = FieldType(f"a block index in [0, {MAX_BLOCKS}], or None",
                  lambda v: v is None or (type(v) is int and 0 <= v <= MAX_BLOCKS))
ROOT_HEX = FieldType("a 64-hex-digit manifest root, or ''",
                     lambda v: type(v) is str and (v == "" or _HEX_ROOT.fullmatch(v) is not None))


@dataclass(frozen=True)
class ServerRecord:
    """One node's announcement for the blocks it serves (the same value under each block's key).

    Each field declares its schema (ledger/schema.py); `from_value` accepts a value only if every
    field meets it."""

    peer_id: str
    state: str = spec(STATE)
    start: int = spec(BLOCK)
    end: int = spec(BLOCK)
    throughput: float = spec(THROUGHPUT)  # decode tokens/s through the whole span, measured by the node
    dtype: str = spec(DTYPE)
    device: str = spec(DEVICE)
    cache_tokens_left: int = spec(_count("cache tokens left"))
    version: int = spec(VERSION)
    name: str = spec(NAME, default="")
    active_sessions: int = spec(_count("active sessions"), default=0)
    max_step_tokens: int = spec(_count("max step tokens", 1), default=2048)  # the node's limits, so clients
    max_session_length: int = spec(_count("max session length", 1), default=8192)  # chunk and size sessions to fit
    maddrs: list[str] = spec(MADDRS, default_factory=list)  # where to dial it (peers need not find it via libp2p)
    rtt_ms: dict[str, float] = spec(RTT_MAP, default_factory=dict)  # measured round trips to next-block nodes
    extra: dict[str, Any] = spec(EXTRA, default_factory=dict)  # forward-compatible additions (e.g. checkpoint)
    scheme: str = spec(SCHEME, default="")  # quantization of its weights ("int8", "nf4"), "" for none
    group_size: int = spec(GROUP, default=0)  # the scheme's group size, 0 for none
    weights_root: str = spec(ROOT_HEX, default="")  # the derived store it serves (of the model keyed), "" for none
    ring: bool = spec(RING, default=False)  # holds the embeddings or LM head its span's ends need to close a ring
    moving_to: int | None = spec(CLAIM, default=None)  # the start it claimed and is moving to (node/selection.py)
    # decode tokens/s through the span of `batch_size` sessions together, all of them, measured by the node:
    # with `throughput` (one session) the planner prices a loaded node's step (routing/planner.py); 0: none
    batch_throughput: float = spec(BATCH_THROUGHPUT, default=0.0)
    batch_size: int = spec(_count("batch size", 1), default=1)

    @property
    def served_root(self) -> str | None:
        """The root of the weights this node computes with; None when it serves the keyed model itself."""
        return self.weights_root or None

    def to_value(self) -> dict[str, Any]:
        d = asdict(self)
        del d["peer_id"]
        return d

    @classmethod
    def from_value(cls, peer_id: Any, value: Any, *, num_blocks: int = MAX_BLOCKS,
                   block: int | None = None) -> "ServerRecord | None":
        """Parse a record strictly; None (and a drop counted in `routing.untrusted`) for anything
        malformed. It must lie within the model's `num_blocks` and cover `block`, the block whose
        DHT key held it. Keys this version does not know are ignored: newer nodes may add fields."""
        try:
            return cls._parse(peer_id, value, num_blocks, block)
        except RecordError as e:
            untrusted.dropped("record", f"from {peer_id if type(peer_id) is str else '?'}: {e}")
            return None

    @classmethod
    def _parse(cls, peer_id: Any, value: Any, num_blocks: int, block: int | None) -> "ServerRecord":
        if not PEER_ID.check(peer_id):
            raise RecordError("its subkey is not an Ed25519 peer ID")
        try:
            record = cls(peer_id=peer_id, **open_fields(cls, value, "a record"))
        except EncodingError as e:
            raise RecordError(str(e)) from None
        if not record.start < record.end <= num_blocks:
            raise RecordError(f"blocks {record.start}:{record.end} are not a span of the model's {num_blocks}")
        if record.moving_to is not None and record.moving_to + record.end - record.start > num_blocks:
            raise RecordError(f"a move to block {record.moving_to} takes its span past the model's {num_blocks}")
        if block is not None and not record.start <= block < record.end:
            raise RecordError(f"blocks {record.start}:{record.end} do not cover block {block}, where it was found")
        return record

    @property
    def is_serving(self) -> bool:
        return self.state == "online"


def _decodes(payload: bytes) -> bool:
    """Whether hivemind can decode a value. One it cannot (a map with an integer key packs, but does
    not unpack) raises inside hivemind's search, which then never finishes: every read of its key
    would hang until it timed out. Refused here, it is neither stored nor returned."""
    try:
        MSGPackSerializer.loads(payload)
    except Exception:  # msgpack and hivemind's extension hooks raise a zoo of types on hostile bytes
        return False
    return True


VERIFIED_CACHE = 4096  # signed records a validator remembers as valid: a swarm's records, each under its blocks
# The largest record (key, subkey and value bytes) remembered: an honest node's record is about 1 KiB, and
# anyone can sign big valid values with a free key, so the set holds at most VERIFIED_CACHE times this.
VERIFIED_BYTES = 8192


class SignedRecordValidator(RecordValidatorBase):
    """Signs our own records with the node key; accepts only records signed by their subkey's peer.

    Holds the raw seed (not a key object) so hivemind can pickle it into its DHT process.

    A read of the swarm receives each record once from every peer that stores or caches its key (a
    lookup asks them all), and again at every read until the owner re-announces it: checking its
    signature each time was most of an idle node's CPU in a 32-node swarm. So the records found valid
    are remembered, exactly (key, subkey, value and expiry: any other bytes are checked afresh), in a
    bounded, least-recently-used set of small records (`VERIFIED_BYTES` each at most); invalid ones are
    never remembered, so forgeries cannot evict.
    """

    def __init__(self, seed: bytes | None = None) -> None:
        self._seed = seed
        self._peer_id = Identity(seed).peer_id if seed is not None else None
        self._verified: OrderedDict[tuple[bytes, bytes, bytes, float], None] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"_seed": self._seed, "_peer_id": self._peer_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _verified=OrderedDict())

    @staticmethod
    def _message(record: DHTRecord, payload: bytes) -> bytes:
        return msgpack.packb([record.key, record.subkey, payload, record.expiration_time], use_bin_type=True)

    @staticmethod
    def _owner(record: DHTRecord) -> str | None:
        """The peer ID a subkey names; plain msgpack, since hivemind's tuple extension recurses."""
        try:
            owner = msgpack.unpackb(record.subkey, raw=False)
        except (TypeError, ValueError):
            return None
        return owner if PEER_ID.check(owner) else None

    def sign_value(self, record: DHTRecord) -> bytes:
        if self._seed is None or self._owner(record) != self._peer_id:
            return record.value  # not ours to sign: validation will refuse it
        signature = Identity(self._seed).sign(keys.DHT_RECORD, self._message(record, record.value))
        return msgpack.packb([record.value, signature], use_bin_type=True)

    def validate(self, record: DHTRecord) -> bool:
        seen = (record.key, record.subkey, record.value, record.expiration_time)
        if not all(type(part) is bytes for part in seen[:3]):  # hostile decoding: unhashable, never valid
            return self._check(record)
        if sum(map(len, seen[:3])) > VERIFIED_BYTES:  # checked every time, never held
            return self._check(record)
        if seen in self._verified:
            self._verified.move_to_end(seen)
            return True
        if not self._check(record):
            return False
        self._verified[seen] = None
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return True

    def _check(self, record: DHTRecord) -> bool:
        owner = self._owner(record)
        if owner is None:
            return False
        try:
            payload, signature = msgpack.unpackb(record.value, raw=False)
        except (ValueError, TypeError, msgpack.ExtraData):
            return False
        if not isinstance(payload, bytes) or not isinstance(signature, bytes) or not _decodes(payload):
            return False
        return keys.verify(owner, keys.DHT_RECORD, self._message(record, payload), signature)

    def strip_value(self, record: DHTRecord) -> bytes:
        return msgpack.unpackb(record.value, raw=False)[0]

    @property
    def priority(self) -> int:
        return 10  # sign last, validate first: the signature covers the final bytes
