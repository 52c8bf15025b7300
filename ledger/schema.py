"""Typed records that cross a process boundary: one dataclass per schema, validated both ways.

A record's fields declare their wire form with `spec(...)`; construction checks every value, and
`from_wire` accepts exactly the declared keys, so a decoded record is as valid as a built one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ledger import canonical
from ledger.errors import EncodingError, KeyFormatError
from ledger.keys import Identity, public_key_from_peer_id

MAX_TEXT = 256
MAX_LIST = 100_000


@dataclass(frozen=True)
class FieldType:
    """How one field is checked in Python and moved to and from its msgpack value."""

    what: str
    check: Callable[[Any], bool]
    to_wire: Callable[[Any], Any] = lambda v: v
    from_wire: Callable[[Any], Any] = lambda v: v


def _is_uint(v: Any) -> bool:
    return type(v) is int and 0 <= v < 1 << 64


def _is_text(v: Any) -> bool:
    return type(v) is str and 0 < len(v) <= MAX_TEXT and v.isprintable()


def _is_peer_id(v: Any) -> bool:
    if type(v) is not str:
        return False
    try:
        public_key_from_peer_id(v)
    except KeyFormatError:
        return False
    return True


def _is_digest(v: Any) -> bool:
    return type(v) is bytes and len(v) == 32


def _tuple_from_list(v: Any) -> Any:
    return tuple(v) if type(v) is list else v


UINT = FieldType("an unsigned 64-bit integer", _is_uint)
TEXT = FieldType(f"printable text of 1 to {MAX_TEXT} characters", _is_text)
PEER_ID = FieldType("an Ed25519 peer ID (12D3KooW...)", _is_peer_id)
DIGEST = FieldType("a 32-byte SHA-256 digest", _is_digest)
PUBLIC_KEY = FieldType("a 32-byte Ed25519 public key", _is_digest)
SIGNATURE = FieldType("a 64-byte Ed25519 signature", lambda v: type(v) is bytes and len(v) == 64)
BLOCKS = FieldType(
    "a block range [start, end) with 0 <= start < end",
    lambda v: type(v) is tuple and len(v) == 2 and all(map(_is_uint, v)) and v[0] < v[1],
    list,
    _tuple_from_list,
)
DIGESTS = FieldType(
    f"a list of up to {MAX_LIST} 32-byte digests",
    lambda v: type(v) is tuple and len(v) <= MAX_LIST and all(map(_is_digest, v)),
    list,
    _tuple_from_list,
)


def _is_packable_map(v: Any) -> bool:
    if type(v) is not dict:
        return False
    try:
        canonical.pack(v)
    except EncodingError:
        return False
    return True


MAP = FieldType("a map with str keys and canonical values (no floats)", _is_packable_map)


def brief(value: Any) -> str:
    """An untrusted value for an error message: never the repr of a whole, possibly deep, structure."""
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{value!r:.80}"


def spec(field_type: FieldType, **default: Any) -> Any:
    """Declare a record field of `field_type` (`default=` or `default_factory=` for an optional one)."""
    return dataclasses.field(metadata={"type": field_type}, **default)


R = TypeVar("R", bound="Record")
SR = TypeVar("SR", bound="SignedRecord")


@dataclass(frozen=True)
class Record:
    """Base of every schema'd record: checks its fields on construction."""

    name: ClassVar[str] = "record"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            field_type: FieldType | None = f.metadata.get("type")
            if field_type is None:
                nested = f.metadata["record"]
                if not (value is None and f.metadata["optional"]) and not isinstance(value, nested):
                    raise EncodingError(f"{self.name}.{f.name} must be a {nested.name}")
            elif not field_type.check(value):
                raise EncodingError(f"{self.name}.{f.name} must be {field_type.what}, got {brief(value)}")

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map of this record (feed it to `canonical.pack`)."""
        wire: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            field_type = f.metadata.get("type")
            if value is None and f.metadata.get("added"):
                continue  # absent, so records written before the field existed keep their bytes
            if field_type is not None:
                wire[f.name] = field_type.to_wire(value)
            else:
                wire[f.name] = None if value is None else value.to_wire()
        return wire

    @classmethod
    def from_wire(cls: type[R], wire: Any) -> R:
        """Build a record from a decoded map holding exactly its fields."""
        if type(wire) is not dict:
            raise EncodingError(f"a {cls.name} must be a map")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("added")}
        if not required <= set(wire) <= names:
            extra, missing = sorted(set(wire) - names), sorted(required - set(wire))
            raise EncodingError(f"{cls.name} fields wrong: unexpected {extra}, missing {missing}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in wire:
                continue  # an added field, absent: its default (None)
            value = wire[f.name]
            field_type = f.metadata.get("type")
            if field_type is not None:
                values[f.name] = field_type.from_wire(value)
            elif value is not None or not f.metadata["optional"]:
                values[f.name] = f.metadata["record"].from_wire(value)
            else:
                values[f.name] = None
        return cls(**values)


@dataclass(frozen=True)
class SignedRecord(Record):
    """A record whose `signature` field signs the canonical bytes of all its other fields."""

    def signed_bytes(self) -> bytes:
        wire = self.to_wire()
        del wire["signature"]
        return canonical.pack(wire)

    def signed(self: SR, identity: Identity, context: str) -> SR:
        """This record with `signature` made by `identity` under the domain-separation `context`."""
        return dataclasses.replace(self, signature=identity.sign(context, self.signed_bytes()))


def open_fields(cls: type, wire: Any, what: str) -> dict[str, Any]:
    """The values of dataclass `cls`'s `spec` fields in a map from a peer that may run a newer version
    (an open schema, unlike `Record.from_wire`): keys this version does not know are ignored, absent
    fields with a default keep it, and each value is checked against its FieldType before it is
    converted, so no converter sees a wrong type. Looks no deeper than the checks do; EncodingError
    names the first field that is wrong."""
    if type(wire) is not dict:
        raise EncodingError(f"{what} is a map")
    values = {}
    for f in dataclasses.fields(cls):
        field_type: FieldType | None = f.metadata.get("type")
        if field_type is None:
            continue  # not carried in the map (a record's DHT subkey)
        if f.name not in wire:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise EncodingError(f"{f.name} is missing")
            continue
        value = wire[f.name]
        if not field_type.check(value):
            raise EncodingError(f"{f.name} must be {field_type.what}, got {brief(value)}")
        values[f.name] = field_type.from_wire(value)
    return values


def added(field_type: FieldType) -> Any:
    """Declare a field added to a schema after records were signed and logged without it: None (the
    default) is left out of the wire form, so every older record decodes and re-encodes to itself."""
    optional = FieldType(f"{field_type.what}, or absent", lambda v: v is None or field_type.check(v),
                         field_type.to_wire, field_type.from_wire)
    return dataclasses.field(default=None, metadata={"type": optional, "added": True})


def nested(record: type[Record], optional: bool = False) -> Any:
    """Declare a field holding another record (or None, when optional)."""
    return dataclasses.field(metadata={"record": record, "optional": optional})
