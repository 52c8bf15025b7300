"""Step attestations: a node's signature over what it computed, so a wrong answer is provable.

Every inference step and forward reply carries one: (node, session, step, position, manifest
root, blocks, compute dtype, digest of the input hidden states, digest of the output hidden
states, and the dtype the output travelled in), signed with the node's identity key in the
`step/v1` context. The client checks each one and keeps them; a
spot check that disagrees turns two of them into evidence anyone can verify.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ledger import keys
from ledger.errors import EncodingError
from ledger.keys import Identity
from ledger.schema import BLOCKS, DIGEST, PEER_ID, SIGNATURE, TEXT, UINT, SignedRecord, added, spec

from . import wire
from .errors import PeerFailure

FORWARD_SESSION = "forward"  # the session name of stateless forward replies


@dataclass(frozen=True)
class Attestation(SignedRecord):
    name = "attestation"

    node: str = spec(PEER_ID)
    session: str = spec(TEXT)
    step: int = spec(UINT)
    start: int = spec(UINT)
    manifest_root: bytes = spec(DIGEST)
    blocks: tuple[int, int] = spec(BLOCKS)
    dtype: str = spec(TEXT)  # the compute dtype, which sets how far its results may stray honestly
    input_digest: bytes = spec(DIGEST)
    output_digest: bytes = spec(DIGEST)
    signature: bytes = spec(SIGNATURE)
    base_root: bytes | None = added(DIGEST)  # a quantized node: the model its weights were derived from
    scheme: str | None = added(TEXT)  # ... and how (manifest_root is then the derived store's root)
    # The dtype the output was sent in (the next node's compute dtype): its rounding is part of the
    # output's honest error, so a re-checker of the attestation needs nothing else to bound it.
    travel_dtype: str | None = added(TEXT)

    def is_signed(self) -> bool:
        return keys.verify(self.node, keys.STEP, self.signed_bytes(), self.signature)


def attest(identity: Identity, *, session: str, step: int, start: int, manifest_root: bytes, blocks: tuple[int, int],
           dtype: str, input_digest: bytes, output_digest: bytes, travel_dtype: str,
           base_root: bytes | None = None, scheme: str | None = None) -> Attestation:
    """`manifest_root` is the root of the weights computed with; a quantized node adds what they derive from."""
    return Attestation(node=identity.peer_id, session=session, step=step, start=start,
                       manifest_root=manifest_root, blocks=blocks, dtype=dtype, input_digest=input_digest,
                       output_digest=output_digest, signature=bytes(64), base_root=base_root,
                       scheme=scheme, travel_dtype=travel_dtype).signed(identity, keys.STEP)


def parse_attestation(obj: Any) -> Attestation | None:
    """An attestation from a reply frame, or None if it is missing or malformed (never trusted unchecked)."""
    try:
        return Attestation.from_wire(obj)
    except (EncodingError, TypeError, ValueError):
        return None


def check_step_attestation(att: Attestation | None, *, peer: str, session: str, step: int, start: int, root: str,
                           blocks: tuple[int, int], dtype: str, sent: torch.Tensor,
                           received: torch.Tensor, scheme: str | None = None) -> Attestation:
    """The attestation a node must send with a step: signed by it, about exactly this step's bytes,
    in the compute dtype and weights (`root`, quantized by `scheme`) it announced, naming the dtype
    its output travelled in."""
    if att is None:
        raise PeerFailure(peer, "sent no (or a malformed) step attestation")
    expected = (peer, session, step, start, bytes.fromhex(root), blocks, dtype, wire.tensor_digest(sent),
                wire.tensor_digest(received), scheme, wire.dtype_name(received.dtype))
    got = (att.node, att.session, att.step, att.start, att.manifest_root, att.blocks, att.dtype, att.input_digest,
           att.output_digest, att.scheme, att.travel_dtype)
    if got != expected or not att.is_signed():
        raise PeerFailure(peer, "sent an attestation that does not match the step or is not signed by it")
    return att
