"""Valid instances of every untrusted input, built by the real code: what the attacks start from."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import torch

from ledger import canonical, entries
from ledger.errors import EncodingError
from ledger.checkpoint import log_key, sign_checkpoint
from ledger.keys import Identity
from ledger.receipts import Receipt, make_receipt
from routing import wire
from routing.attestation import FORWARD_SESSION, attest
from routing.evidence import Claim, Evidence
from routing.records import ServerRecord

NODE, CLIENT, CHECKER = Identity(b"\x01" * 32), Identity(b"\x02" * 32), Identity(b"\x03" * 32)
ROOT = hashlib.sha256(b"model").digest()
NUM_BLOCKS = 30


def record(**changes: Any) -> ServerRecord:
    """A record of NODE serving blocks 10:20, with every optional field set."""
    fields: dict[str, Any] = dict(
        peer_id=NODE.peer_id, state="online", start=10, end=20, throughput=12.5, dtype="float32", device="cpu",
        cache_tokens_left=8192, version=1, name="volunteer", active_sessions=2, max_step_tokens=2048,
        max_session_length=8192, maddrs=[f"/ip4/127.0.0.1/tcp/4001/p2p/{NODE.peer_id}"],
        rtt_ms={CHECKER.peer_id: 12.5}, extra={"checkpoint": sign_checkpoint(NODE, 1, bytes(32))},
        scheme="int8", group_size=32, weights_root="ab" * 32, moving_to=0, batch_throughput=150.0, batch_size=16)
    return ServerRecord(**{**fields, **changes})


def receipt() -> Receipt:
    return make_receipt(CLIENT, session="s1", node=NODE.peer_id, manifest_root=ROOT, blocks=(10, 20), tokens=7,
                        outputs_digest=hashlib.sha256(b"out").digest(), time_ns=1_700_000_000_000_000_000)


def serve_entry_bytes() -> bytes:
    r = receipt()
    entry = entries.ServeEntry(session=r.session, client=r.client, manifest_root=ROOT, blocks=r.blocks,
                               tokens=r.tokens, steps=7, start_ns=r.time_ns - 10, end_ns=r.time_ns,
                               steps_digest=hashlib.sha256(b"steps").digest(), receipt=r, time_ns=r.time_ns)
    return entries.encode(3, entry)


def load_entry(i: int) -> entries.LoadEntry:
    return entries.LoadEntry(manifest_root=ROOT, blocks=(i, i + 1), shard_digests=(bytes(32),), device="cpu",
                             dtype="float32", time_ns=i)


def checkpoint_note() -> str:
    return sign_checkpoint(NODE, 42, hashlib.sha256(b"tree").digest())


LOG_KEY = log_key(NODE).public_key().public_bytes_raw()


def _attested(identity: Identity, session: str, start: int, sent: torch.Tensor, output: torch.Tensor,
              root: bytes) -> Claim:
    att = attest(identity, session=session, step=0 if session == FORWARD_SESSION else 3, start=start,
                 manifest_root=root, blocks=(10, 20), dtype="float32", input_digest=wire.tensor_digest(sent),
                 output_digest=wire.tensor_digest(output), travel_dtype=wire.dtype_name(output.dtype))
    return Claim(att, output)


def evidence(root: bytes = ROOT, *, width: int = 4, tokens: int = 3, node: Identity = NODE,
             checker: Identity = CHECKER, publisher: Identity = CLIENT) -> Evidence:
    """Signed, self-consistent evidence about `root` accusing `node`: a step at the last of `tokens`
    positions (by default position 2, hidden width 4)."""
    torch.manual_seed(0)
    prefix, start = torch.randn(1, tokens, width), tokens - 1
    step = _attested(node, "s1", start, prefix[:, start:], torch.randn(1, 1, width), root)
    forward = _attested(checker, FORWARD_SESSION, 0, prefix, torch.randn(1, 1, width), root)
    return Evidence(root=root, blocks=(10, 20), start=start, prefix=prefix, step=step, forward=forward,
                    dishonest=node.peer_id, errors_ppm={node.peer_id: 5000, checker.peer_id: 1}, method="local",
                    publisher=publisher.peer_id, time_ns=1_700_000_000_000_000_000).signed(publisher)


def attestation_wire() -> dict[str, Any]:
    return evidence().step.attestation.to_wire()


def deep_list_bytes(depth: int) -> bytes:
    """msgpack of [[[...None...]]] nested `depth` deep, without recursing to build it."""
    return b"\x91" * depth + b"\xc0"


def deep_value(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


def canonical_or_msgpack(value: Any) -> bytes:
    """Canonical bytes when `value` has them (so the schema checks behind decoding run), else the
    plain msgpack an attacker could send anyway."""
    try:
        return canonical.pack(value)
    except EncodingError:
        return msgpack.packb(value, use_bin_type=True)
