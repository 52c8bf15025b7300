"""What nodes announce in the DHT, and the validator that makes announcements unforgeable.

Keys: `swarmlm/<manifest root hex>/block/<i>` holds one record per node serving block i, under
subkey = the node's peer ID. Every record in a SwarmLM DHT must carry an Ed25519 signature by the
peer named in its subkey over (key, subkey, value, expiration) — so no peer can overwrite or
forge another's announcement, and a reader needs nothing but the peer ID to check it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import msgpack
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils import MSGPackSerializer

from ledger import keys
from ledger.errors import KeyFormatError
from ledger.keys import Identity

log = logging.getLogger(__name__)

STATES = ("joining", "online", "draining", "offline")


def block_key(root: str, block: int) -> str:
    return f"swarmlm/{root}/block/{block}"


@dataclass(frozen=True)
class ServerRecord:
    """One node's announcement for the blocks it serves (the same value under each block's key)."""

    peer_id: str
    state: str
    start: int
    end: int
    throughput: float  # decode tokens/s through the whole span, measured by the node
    dtype: str
    device: str
    cache_tokens_left: int
    version: int
    name: str = ""
    active_sessions: int = 0
    max_step_tokens: int = 2048  # the node's limits, so clients chunk and size sessions to fit
    max_session_length: int = 8192
    maddrs: list[str] = field(default_factory=list)  # where to dial it (peers need not find it via libp2p)
    extra: dict[str, Any] = field(default_factory=dict)  # forward-compatible additions (e.g. checkpoint)

    def to_value(self) -> dict[str, Any]:
        d = asdict(self)
        del d["peer_id"]
        return d

    @classmethod
    def from_value(cls, peer_id: str, value: Any) -> "ServerRecord | None":
        """Parse a record's value; None (and a debug log) for anything malformed."""
        try:
            known = {f.name for f in fields(cls)} - {"peer_id"}
            record = cls(peer_id=peer_id, **{k: v for k, v in value.items() if k in known})
            ok = (record.state in STATES and 0 <= record.start < record.end and isinstance(record.throughput, (int, float))
                  and isinstance(record.version, int) and isinstance(record.dtype, str)
                  and type(record.max_step_tokens) is int and type(record.max_session_length) is int
                  and isinstance(record.maddrs, list) and all(isinstance(m, str) for m in record.maddrs)
                  and isinstance(record.extra, dict))
        except (AttributeError, TypeError, ValueError):
            ok = False
        if not ok:
            log.debug("ignoring malformed record from %s: %r", peer_id, value)
            return None
        return record

    @property
    def is_serving(self) -> bool:
        return self.state == "online"


class SignedRecordValidator(RecordValidatorBase):
    """Signs our own records with the node key; accepts only records signed by their subkey's peer.

    Holds the raw seed (not a key object) so hivemind can pickle it into its DHT process.
    """

    def __init__(self, seed: bytes | None = None) -> None:
        self._seed = seed
        self._peer_id = Identity(seed).peer_id if seed is not None else None

    def __getstate__(self) -> dict[str, Any]:
        return {"_seed": self._seed, "_peer_id": self._peer_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @staticmethod
    def _message(record: DHTRecord, payload: bytes) -> bytes:
        return msgpack.packb([record.key, record.subkey, payload, record.expiration_time], use_bin_type=True)

    @staticmethod
    def _owner(record: DHTRecord) -> str | None:
        try:
            owner = MSGPackSerializer.loads(record.subkey)
            keys.public_key_from_peer_id(owner)
            return owner
        except (KeyFormatError, TypeError, ValueError, msgpack.ExtraData):
            return None

    def sign_value(self, record: DHTRecord) -> bytes:
        if self._seed is None or self._owner(record) != self._peer_id:
            return record.value  # not ours to sign: validation will refuse it
        signature = Identity(self._seed).sign(keys.DHT_RECORD, self._message(record, record.value))
        return msgpack.packb([record.value, signature], use_bin_type=True)

    def validate(self, record: DHTRecord) -> bool:
        owner = self._owner(record)
        if owner is None:
            return False
        try:
            payload, signature = msgpack.unpackb(record.value, raw=False)
        except (ValueError, TypeError, msgpack.ExtraData):
            return False
        if not isinstance(payload, bytes) or not isinstance(signature, bytes):
            return False
        return keys.verify(owner, keys.DHT_RECORD, self._message(record, payload), signature)

    def strip_value(self, record: DHTRecord) -> bytes:
        return msgpack.unpackb(record.value, raw=False)[0]

    @property
    def priority(self) -> int:
        return 10  # sign last, validate first: the signature covers the final bytes
