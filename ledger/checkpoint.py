"""Signed tree heads in the C2SP tlog-checkpoint format, and witnesses' cosignatures on them.

A node's log has origin `swarmlm/<peer id>`. Checkpoints are signed by the node's log key and
cosignatures by its witness key, both derived from the identity seed (C2SP: one key per signature
type) and certified by the identity in the log's entry 0, so everything chains to the peer ID.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import note
from ledger.errors import KeyFormatError, NoteError
from ledger.keys import Identity, public_key_from_peer_id
from ledger.merkle import HASH_SIZE

ORIGIN_PREFIX = "swarmlm/"


def origin(peer_id: str) -> str:
    """The checkpoint origin, and log key name, of a node's log."""
    return ORIGIN_PREFIX + peer_id


def witness_name(peer_id: str) -> str:
    """The key name under which a node cosigns other nodes' checkpoints."""
    return origin(peer_id) + "/witness"


def log_key(identity: Identity) -> Ed25519PrivateKey:
    return identity.derive_key("checkpoint")


def witness_key(identity: Identity) -> Ed25519PrivateKey:
    return identity.derive_key("cosignature")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: whose log, how many entries, and the Merkle root over them."""

    origin: str
    size: int
    root: bytes

    @property
    def peer_id(self) -> str:
        return self.origin[len(ORIGIN_PREFIX) :]

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{note.b64encode(self.root)}\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body: exactly origin, size and root lines, strictly spelled."""
        lines = text.split("\n")
        if len(lines) != 4 or lines[3] != "":
            raise NoteError("a SwarmLM checkpoint has exactly three lines: origin, tree size, root hash")
        origin_line, size_line, root_line = lines[:3]
        if not origin_line.startswith(ORIGIN_PREFIX):
            raise NoteError(f"checkpoint origin {origin_line!r:.80} is not swarmlm/<peer id>")
        try:
            public_key_from_peer_id(origin_line[len(ORIGIN_PREFIX) :])
        except KeyFormatError as e:
            raise NoteError(f"checkpoint origin {origin_line!r:.80}: {e}") from None
        size = note.parse_decimal(size_line, "checkpoint tree size")
        root = note.b64decode_canonical(root_line, "checkpoint root hash")
        if len(root) != HASH_SIZE:
            raise NoteError(f"checkpoint root hash has {len(root)} bytes, not {HASH_SIZE}")
        return cls(origin_line, size, root)


def sign_checkpoint(identity: Identity, size: int, root: bytes) -> str:
    """The signed note of this node's tree head."""
    checkpoint = Checkpoint(origin(identity.peer_id), size, root)
    return str(note.Note(checkpoint.text(), (note.sign(checkpoint.text(), checkpoint.origin, log_key(identity)),)))


def open_checkpoint(data: str | bytes, peer_id: str, log_public_key: bytes) -> tuple[Checkpoint, note.Note]:
    """Parse a signed checkpoint of `peer_id`'s log and check its log-key signature."""
    parsed = note.parse(data)
    checkpoint = Checkpoint.from_text(parsed.text)
    if checkpoint.origin != origin(peer_id):
        raise NoteError(f"checkpoint is for {checkpoint.origin}, expected {origin(peer_id)}")
    note.verify(parsed, checkpoint.origin, log_public_key)
    return checkpoint, parsed


def cosign_checkpoint(identity: Identity, parsed: note.Note, timestamp: int) -> note.Signature:
    """This node's cosignature/v1 over another node's checkpoint."""
    return note.cosign(parsed.text, witness_name(identity.peer_id), witness_key(identity), timestamp)


def verify_cosignature(parsed: note.Note, witness_peer_id: str, witness_public_key: bytes) -> int:
    """Check a witness's cosignature on a checkpoint; returns its timestamp."""
    return note.verify_cosignature(parsed, witness_name(witness_peer_id), witness_public_key)
