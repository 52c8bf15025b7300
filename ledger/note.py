"""C2SP signed notes (c2sp.org/signed-note): text followed by a blank line and signature lines.

Parsing is strict: valid UTF-8 without control characters other than newline, a body ending
in a newline, signature lines exactly `— <name> <base64(key ID || signature)>`, canonical
base64, and limits on size and signature count. Signing and verification cover two signature
types: plain Ed25519 (0x01) and timestamped Ed25519 cosignatures (0x04, c2sp.org/tlog-cosignature).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import NoteError

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
MAX_NOTE_SIZE = 64 * 1024
MAX_SIGNATURES = 100
_DASH = "\u2014 "
_NAME = re.compile(r"[^\s+]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def parse_decimal(text: str, what: str, limit: int = 1 << 63) -> int:
    """A non-negative ASCII decimal without leading zeros (the only form C2SP allows)."""
    if not _DECIMAL.fullmatch(text) or not text.isascii():
        raise NoteError(f"{what} {text!r:.40} is not an ASCII decimal without leading zeros")
    if len(text) > len(str(limit)):  # before int(), which refuses (ValueError) beyond 4300 digits
        raise NoteError(f"{what} {text[:40]}... is out of range")
    value = int(text)
    if value >= limit:
        raise NoteError(f"{what} {value} is out of range")
    return value


def b64decode_canonical(text: str, what: str) -> bytes:
    """Standard base64 that re-encodes to exactly `text`, so one value has one spelling."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_id(name: str, signature_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4], as C2SP recommends."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()[:4]


def check_key_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise NoteError(f"key name {name!r:.60} must be non-empty without spaces or '+'")


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {b64encode(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    """A note's text (ending in a newline) and its signatures, in order."""

    text: str
    signatures: tuple[Signature, ...]

    def __str__(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_DASH):
        raise NoteError(f"note signature line {line!r:.60} does not start with an em dash and a space")
    parts = line[len(_DASH) :].split(" ")
    if len(parts) != 2:
        raise NoteError(f"note signature line {line!r:.60} is not '— <name> <signature>'")
    name, encoded = parts
    check_key_name(name)
    raw = b64decode_canonical(encoded, f"signature of {name}")
    if len(raw) < 5:
        raise NoteError(f"signature of {name} is too short")
    return Signature(name, raw[:4], raw[4:])


def parse(data: str | bytes) -> Note:
    """Parse a signed note; NoteError says which rule the text breaks."""
    if not isinstance(data, (str, bytes)):
        raise NoteError(f"a note is text, not {type(data).__name__}")
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if len(raw) > MAX_NOTE_SIZE:
            raise NoteError(f"note exceeds {MAX_NOTE_SIZE} bytes")
        whole = raw.decode("utf-8")
    except UnicodeError:
        raise NoteError("note is not valid UTF-8") from None
    if any(c < " " and c != "\n" for c in whole):
        raise NoteError("note contains control characters other than newline")
    split = whole.rfind("\n\n")
    if split < 0 or not whole.endswith("\n"):
        raise NoteError("note has no blank line before its signatures, or does not end in a newline")
    text, lines = whole[: split + 1], whole[split + 2 : -1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def sign(text: str, name: str, key: Ed25519PrivateKey) -> Signature:
    """An Ed25519 (type 0x01) note signature over `text`."""
    check_key_name(name)
    public = key.public_key().public_bytes_raw()
    return Signature(name, key_id(name, ED25519, public), key.sign(text.encode()))


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def cosign(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> Signature:
    """A timestamped cosignature/v1 (type 0x04) over a checkpoint's text."""
    check_key_name(name)
    if not 0 <= timestamp < 1 << 63:
        raise ValueError(f"cosignature timestamp {timestamp} is out of range")
    public = key.public_key().public_bytes_raw()
    stamp = timestamp.to_bytes(8, "big")
    return Signature(name, key_id(name, COSIGNATURE_V1, public), stamp + key.sign(_cosigned_message(text, timestamp)))


def _matching(note: Note, name: str, signature_type: int, public_key: bytes) -> list[Signature]:
    kid = key_id(name, signature_type, public_key)
    return [s for s in note.signatures if s.name == name and s.key_id == kid]


def _check(public_key: bytes, signature: bytes, message: bytes, name: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise NoteError(f"signature by {name} does not verify; the note was altered or forged") from None


def verify(note: Note, name: str, public_key: bytes) -> None:
    """Require a valid Ed25519 signature by (name, key); every matching line must verify."""
    found = _matching(note, name, ED25519, public_key)
    if not found:
        raise NoteError(f"note is not signed by {name}")
    for s in found:
        _check(public_key, s.signature, note.text.encode(), name)


def verify_cosignature(note: Note, name: str, public_key: bytes) -> int:
    """Require a valid cosignature by (name, key) and return its timestamp."""
    found = _matching(note, name, COSIGNATURE_V1, public_key)
    if not found:
        raise NoteError(f"note has no cosignature by {name}")
    timestamps = []
    for s in found:
        if len(s.signature) != 8 + 64:
            raise NoteError(f"cosignature by {name} is not 8 + 64 bytes")
        timestamp = int.from_bytes(s.signature[:8], "big")
        if timestamp >= 1 << 63:
            raise NoteError(f"cosignature by {name} has an out-of-range timestamp")
        _check(public_key, s.signature[8:], _cosigned_message(note.text, timestamp), name)
        timestamps.append(timestamp)
    return max(timestamps)
