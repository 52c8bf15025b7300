"""The node identity: one Ed25519 key that is both its libp2p identity and its signing key.

The key file is a libp2p protobuf `PrivateKey` (what hivemind's p2pd reads), so the peer ID the
swarm sees is derived from the same key that signs ledger entries and DHT records: anything the
node signs verifies from its peer ID alone. Every signature is domain-separated by a registered
context, so a signature made for one purpose can never be replayed as another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import KeyFormatError

LEDGER_ENTRY = "ledger-entry/v1"
RECEIPT = "receipt/v1"
DHT_RECORD = "dht-record/v1"
STEP = "step/v1"
EVIDENCE = "evidence/v1"
PUSH_GRANT = "push-grant/v1"
STEP_TICKET = "step-ticket/v1"
RING_TICKET = "ring-ticket/v1"
CONTEXTS = frozenset({LEDGER_ENTRY, RECEIPT, DHT_RECORD, STEP, EVIDENCE, PUSH_GRANT, STEP_TICKET, RING_TICKET})

_ED25519 = 1  # libp2p crypto.pb KeyType
_PRIVATE_FRAME = bytes([0x08, _ED25519, 0x12, 64])  # field 1 Type = Ed25519, field 2 Data, 64 bytes
_PUBLIC_FRAME = bytes([0x08, _ED25519, 0x12, 32])
_IDENTITY_MULTIHASH = bytes([0x00, len(_PUBLIC_FRAME) + 32])
_KEY_TYPES = {0: "RSA", 1: "Ed25519", 2: "Secp256k1", 3: "ECDSA"}


def _framed(context: str, message: bytes) -> bytes:
    if context not in CONTEXTS:
        raise ValueError(f"unregistered signing context {context!r}; add it to ledger.keys.CONTEXTS")
    return b"swarmlm:" + context.encode() + b"\x00" + message


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer ID of an Ed25519 public key: base58 of the identity multihash."""
    if len(public_key) != 32:
        raise KeyFormatError(f"an Ed25519 public key has 32 bytes, got {len(public_key)}")
    return base58.b58encode(_IDENTITY_MULTIHASH + _PUBLIC_FRAME + public_key).decode()


MAX_PEER_ID = 64  # an Ed25519 peer ID has 52 characters; base58 decoding takes time quadratic in the length


@lru_cache(maxsize=4096)
def public_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key inside a peer ID; KeyFormatError for any other kind of ID."""
    if len(peer_id) > MAX_PEER_ID:  # before decoding: a megabyte of base58 would take minutes
        raise KeyFormatError(f"a peer ID has at most {MAX_PEER_ID} characters, not {len(peer_id)}")
    try:
        raw = base58.b58decode(peer_id.encode("ascii"), autofix=False)
    except ValueError as e:
        raise KeyFormatError(f"peer ID {peer_id!r} is not base58: {e}") from None
    if len(raw) != len(_IDENTITY_MULTIHASH) + len(_PUBLIC_FRAME) + 32 or not raw.startswith(
        _IDENTITY_MULTIHASH + _PUBLIC_FRAME
    ):
        raise KeyFormatError(
            f"peer ID {peer_id!r} does not embed an Ed25519 key (expected one starting 12D3KooW); "
            "only Ed25519 identities can sign SwarmLM records"
        )
    public_key = raw[-32:]
    if peer_id_from_public_key(public_key) != peer_id:
        raise KeyFormatError(f"peer ID {peer_id!r} is not in canonical base58")
    return public_key


def verify(signer: str | bytes, context: str, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is `signer`'s (a peer ID or 32-byte public key) over `message` in `context`."""
    public_key = public_key_from_peer_id(signer) if isinstance(signer, str) else signer
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, _framed(context, message))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """A node's Ed25519 identity key."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise KeyFormatError(f"an Ed25519 seed has 32 bytes, got {len(self.seed)}")

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @classmethod
    def from_bytes(cls, data: bytes) -> Identity:
        """Parse a libp2p protobuf `PrivateKey` holding an Ed25519 seed and public key."""
        if len(data) >= 2 and data[0] == 0x08 and data[1] != _ED25519:
            kind = _KEY_TYPES.get(data[1], f"type {data[1]}")
            raise KeyFormatError(
                f"the identity key is {kind}, but SwarmLM needs Ed25519; "
                "move the file away and a new Ed25519 identity is created on next start"
            )
        if len(data) != len(_PRIVATE_FRAME) + 64 or not data.startswith(_PRIVATE_FRAME):
            raise KeyFormatError("not a libp2p Ed25519 private key file (wrong framing or length)")
        identity = cls(data[4:36])
        if identity.public_key != data[36:]:
            raise KeyFormatError("the identity file's public key does not match its seed; the file is corrupt")
        return identity

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Load the identity at `path`, creating it (mode 0600) on first use.

        The file appears atomically (written aside, then hard-linked into place), so a crash
        never leaves a truncated key, and of two processes creating it at once both get one key.
        """
        path = Path(path)
        try:
            return cls.from_bytes(path.read_bytes())
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        identity = cls.generate()
        scratch = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(identity.to_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.link(scratch, path)
        except FileExistsError:  # another process created it first: use theirs
            return cls.from_bytes(path.read_bytes())
        finally:
            scratch.unlink()
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return identity

    def to_bytes(self) -> bytes:
        return _PRIVATE_FRAME + self.seed + self.public_key

    @cached_property
    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @cached_property
    def public_key(self) -> bytes:
        return _raw_public(self._private.public_key())

    @cached_property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    def sign(self, context: str, message: bytes) -> bytes:
        """Ed25519 signature over `b"swarmlm:" + context + b"\\0" + message`."""
        return self._private.sign(_framed(context, message))

    def derive_key(self, purpose: str) -> Ed25519PrivateKey:
        """A separate Ed25519 key for one purpose, derived from the seed (same seed, same key).

        C2SP advises one key per signature type; deriving them means the identity file stays the
        only secret to back up.
        """
        seed = HKDF(hashes.SHA256(), 32, salt=None, info=b"swarmlm key/v1 " + purpose.encode()).derive(self.seed)
        return Ed25519PrivateKey.from_private_bytes(seed)
