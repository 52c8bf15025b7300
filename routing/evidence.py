"""Evidence of a wrong computation: two signed attestations, the inputs, and a checkable verdict.

A document holds the input to the disputed span (every position up to the step, so anyone can
recompute it), the session node's signed step attestation with the output it sent, the checking
node's signed forward attestation with its output, and the verdict naming which of the two is wrong. The publisher signs it all.
`check_evidence` needs nothing but the document and the model's shards: it verifies every
signature and digest, recomputes the span, and confirms or rejects the verdict.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ledger import canonical, keys
from ledger.errors import EncodingError
from ledger.keys import Identity
from ledger.schema import BLOCKS, DIGEST, PEER_ID, SIGNATURE, UINT, FieldType
from shards.store import ShardStore

from . import wire
from .attestation import FORWARD_SESSION, Attestation
from .errors import ProtocolError, RoutingError

FORMAT = "swarmlm-evidence/1"
MAX_SIZE = 64 << 20
MAX_HIDDEN, MAX_TOKENS, MAX_BATCH = 1 << 16, 1 << 20, 1 << 10
PPM = 1_000_000
METHODS = ("local", "majority")
MAX_PARTIES = 16
_FIELDS = {"format", "root", "blocks", "start", "prefix", "step", "forward", "dishonest", "errors_ppm", "method",
           "publisher", "time_ns", "signature"}
ERRORS_PPM = FieldType(f"a map of at most {MAX_PARTIES} peer IDs to non-negative integers",
                       lambda v: type(v) is dict and len(v) <= MAX_PARTIES
                       and all(PEER_ID.check(k) and UINT.check(x) for k, x in v.items()))
METHOD = FieldType(f"one of {', '.join(METHODS)}", lambda v: type(v) is str and v in METHODS)


class EvidenceError(RoutingError):
    """An evidence document is malformed, mis-signed, or inconsistent with itself."""


# Honest relative error of a quantized span (computed in float32) against its base's float32 weights,
# per position, SmolLM2-135M, 30 blocks, 23 inputs (scripts/calibrate_tolerance.py): int8 worst 0.49
# (median near 0.03), nf4 worst 3.9 (4-bit on top of the GGUF's 4-bit weights); about 2x margin each.
# q4_1 takes nf4's bound: the same 4 bits (on this Q4_1-born model it measures exactly 0).
SCHEME_TOLERANCE = {"int8": 1.0, "nf4": 8.0, "q4_1": 8.0}


def tolerance(dtype_a: str, dtype_b: str, scheme_a: str | None = None, scheme_b: str | None = None) -> float:
    """Largest relative L2 difference (per position) two honest computations of one span may show.

    Calibrated with scripts/calibrate_tolerance.py on SmolLM2-135M (spans of 10 and 30 blocks,
    random and real prompts): float32 vs float32 (cached decode vs stateless forward) peaks near
    2e-6, so 1e-4 leaves a margin of about 50x. Low precision has a heavy tail: per position,
    bfloat16 vs float32 over 30 blocks has a median of 0.02, a 99.9th percentile of 0.34 and a
    worst case of 0.58 in 2,880 positions (float16 similar), so 1.0 leaves about 1.7x. Between
    float32 nodes a spot check catches a single weight matrix off by 5%; where bfloat16 or float16
    is involved it catches gross deviations only (wrong or garbage weights, skipped blocks).

    A scheme is the quantization of a derived store (shards/quant.py); None is a base store's
    float weights. Two nodes of one derived root hold the same weights (the reference dequantizes
    them in float32), so only their dtypes count: an int8 root's cached decode vs stateless forward
    peaks at 1.4e-6, while a node announcing the int8 root that serves nf4 shows at least 0.066
    per position (660x the bound) and one skipping its span 0.996. Against float weights (or another
    scheme) each side's SCHEME_TOLERANCE is added, which only catches gross faults: nf4 served for
    int8 stays under int8's cross-root bound. So check a quantized node against its own root.
    Raises ValueError for a scheme it has no calibration for.
    """
    unknown = {scheme_a, scheme_b} - {None, *SCHEME_TOLERANCE}
    if unknown:
        raise ValueError(f"no tolerance calibrated for quantization scheme {unknown.pop()!r}")
    bound = 1e-4 if dtype_a == dtype_b == "float32" else 1.0
    if scheme_a == scheme_b:
        return bound
    return bound + SCHEME_TOLERANCE.get(scheme_a or "", 0.0) + SCHEME_TOLERANCE.get(scheme_b or "", 0.0)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@dataclass(frozen=True)
class Claim:
    """One side of a dispute: a node's signed attestation and the output it sent."""

    attestation: Attestation
    output: torch.Tensor

    @property
    def travel_dtype(self) -> str:
        """The dtype the output was sent in: the output's own (its attested digest binds it), which a
        current attestation also names; older attestations left it out."""
        return wire.dtype_name(self.output.dtype)

    @property
    def precision(self) -> str:
        """The coarsest rounding the output went through: "float32" only when it was both computed and
        sent in float32. A float32 node whose output travels in the next node's bfloat16 is bounded as
        bfloat16 (the rounding alone is about 2e-3, twenty times float32's bound)."""
        compute = self.attestation.dtype
        return compute if self.travel_dtype == "float32" else self.travel_dtype if compute == "float32" else compute

    def bound(self, other: "Claim | None" = None) -> float:
        """The honest relative error between this output and `other`'s, or a float32 reference of the
        same weights (None): every rounding either went through, and each side's quantization."""
        if other is None:
            return tolerance(self.precision, "float32", self.attestation.scheme, self.attestation.scheme)
        return tolerance(self.precision, other.precision, self.attestation.scheme, other.attestation.scheme)

    def to_wire(self) -> dict[str, Any]:
        return {"attestation": self.attestation.to_wire(), "output": wire.encode_tensor(self.output)}


def _tensor(obj: Any) -> torch.Tensor:
    shape = obj.get("shape") if type(obj) is dict else None
    if type(shape) is not list or len(shape) != 3 or type(shape[2]) is not int or not 0 < shape[2] <= MAX_HIDDEN:
        raise EvidenceError(f"a tensor in the evidence needs a [batch, tokens, hidden <= {MAX_HIDDEN}] shape")
    try:
        return wire.decode_tensor(obj, hidden_size=shape[2], max_tokens=MAX_TOKENS, max_batch=MAX_BATCH)
    except ProtocolError as e:
        raise EvidenceError(f"a tensor in the evidence is malformed: {e}") from None


def _claim(obj: Any) -> Claim:
    if type(obj) is not dict or set(obj) != {"attestation", "output"}:
        raise EvidenceError("a claim is {attestation, output}")
    try:
        attestation = Attestation.from_wire(obj["attestation"])
    except EncodingError as e:
        raise EvidenceError(f"a claim's attestation is malformed: {e}") from None
    return Claim(attestation, _tensor(obj["output"]))


def _field(d: dict[str, Any], name: str, field_type: FieldType) -> Any:
    value = field_type.from_wire(d[name])
    if not field_type.check(value):
        raise EvidenceError(f"the evidence's {name} must be {field_type.what}")
    return value


@dataclass(frozen=True)
class Evidence:
    root: bytes
    blocks: tuple[int, int]
    start: int  # first position of the disputed step
    prefix: torch.Tensor  # float32 input to blocks[0] for positions [0, start + n)
    step: Claim  # the session node's step: its input is prefix[:, start:]
    forward: Claim  # the checker's stateless forward: its input is the whole prefix
    dishonest: str  # the peer the publisher judged wrong (one of the two)
    errors_ppm: dict[str, int]  # each side's relative error against the referee, in millionths
    method: str  # how the tie was broken: "local" (the publisher's own shards) or "majority"
    publisher: str
    time_ns: int
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        return {"format": FORMAT, "root": self.root, "blocks": list(self.blocks), "start": self.start,
                "prefix": wire.encode_tensor(self.prefix), "step": self.step.to_wire(),
                "forward": self.forward.to_wire(), "dishonest": self.dishonest, "errors_ppm": self.errors_ppm,
                "method": self.method, "publisher": self.publisher, "time_ns": self.time_ns}

    def signed(self, identity: Identity) -> "Evidence":
        evidence = dataclasses.replace(self, publisher=identity.peer_id, signature=b"")
        return dataclasses.replace(evidence, signature=identity.sign(keys.EVIDENCE, canonical.pack(evidence.body())))

    def to_bytes(self) -> bytes:
        return canonical.pack({**self.body(), "signature": self.signature})

    def summary(self) -> dict[str, Any]:
        """What a ledger entry keeps when the whole document is too large for one."""
        return {"format": FORMAT, "dishonest": self.dishonest, "publisher": self.publisher, "root": self.root,
                "blocks": list(self.blocks), "start": self.start, "errors_ppm": self.errors_ppm,
                "step": self.step.attestation.to_wire(), "forward": self.forward.attestation.to_wire(),
                "digest": hashlib.sha256(self.to_bytes()).digest()}

    @classmethod
    def from_bytes(cls, data: bytes) -> "Evidence":
        """Parse a document strictly (bounds first, then every field and the shapes' agreement);
        EvidenceError, and nothing else, for any bytes that are not valid evidence."""
        try:
            d = canonical.unpack(data, max_size=MAX_SIZE)
        except EncodingError as e:
            raise EvidenceError(f"malformed evidence document: {e}") from None
        if type(d) is not dict or set(d) != _FIELDS or d["format"] != FORMAT:
            raise EvidenceError(f"not a {FORMAT} document (it must hold exactly {', '.join(sorted(_FIELDS))})")
        evidence = cls(root=_field(d, "root", DIGEST), blocks=_field(d, "blocks", BLOCKS),
                       start=_field(d, "start", UINT), prefix=_tensor(d["prefix"]), step=_claim(d["step"]),
                       forward=_claim(d["forward"]), dishonest=_field(d, "dishonest", PEER_ID),
                       errors_ppm=_field(d, "errors_ppm", ERRORS_PPM), method=_field(d, "method", METHOD),
                       publisher=_field(d, "publisher", PEER_ID), time_ns=_field(d, "time_ns", UINT),
                       signature=_field(d, "signature", SIGNATURE))
        check_shapes(evidence)
        if evidence.to_bytes() != data:
            raise EvidenceError("evidence document is not in its canonical form")
        return evidence

    @classmethod
    def load(cls, path: Path) -> "Evidence":
        try:
            return cls.from_bytes(Path(path).read_bytes())
        except FileNotFoundError:
            raise EvidenceError(f"no evidence file at {path}") from None
        except OSError as e:
            raise EvidenceError(f"cannot read evidence file {path}: {e.strerror or e}") from None


@dataclass(frozen=True)
class Judgement:
    valid: bool
    dishonest: str | None
    reason: str
    errors: dict[str, float]


def check_shapes(e: Evidence) -> None:
    """The tensors agree: two outputs of one shape, and a float32 prefix of the same batch and
    width covering every position up to and through the disputed step."""
    step, forward, prefix = e.step.output.shape, e.forward.output.shape, e.prefix.shape
    if forward != step:
        raise EvidenceError("the two outputs differ in shape")
    if e.prefix.dtype != torch.float32 or (prefix[0], prefix[1], prefix[2]) != (step[0], e.start + step[1], step[2]):
        raise EvidenceError("the prefix must be float32 and cover every position up to the disputed step")


def check_signatures(e: Evidence) -> None:
    """Every signature and digest in the document, and that both claims are about the same step."""
    if not keys.verify(e.publisher, keys.EVIDENCE, canonical.pack(e.body()), e.signature):
        raise EvidenceError(f"the evidence is not signed by its publisher {e.publisher}")
    check_shapes(e)
    for role, claim, sent in (("step", e.step, e.prefix[:, e.start:]), ("forward", e.forward, e.prefix)):
        a = claim.attestation
        if not a.is_signed():
            raise EvidenceError(f"the {role}'s attestation is not signed by {a.node}")
        if a.manifest_root != e.root or a.blocks != e.blocks:
            raise EvidenceError(f"the {role}'s attestation is about another model or span")
        compute = wire.WIRE_DTYPES.get(a.dtype)  # a node receives its input in its compute dtype
        if compute is None:
            raise EvidenceError(f"the {role}'s attested dtype {a.dtype!r:.40} is not one of "
                                f"{', '.join(wire.WIRE_DTYPES)}")
        if a.input_digest != wire.tensor_digest(sent.to(compute)):
            raise EvidenceError(f"the {role}'s attested input is not the prefix in the evidence")
        if a.output_digest != wire.tensor_digest(claim.output):
            raise EvidenceError(f"the {role}'s output is not the one it attested")
        if a.travel_dtype not in (None, claim.travel_dtype):
            raise EvidenceError(f"the {role}'s attestation names travel dtype {a.travel_dtype}, its output is "
                                f"{claim.travel_dtype}")
    if e.step.attestation.start != e.start or e.forward.attestation.session != FORWARD_SESSION:
        raise EvidenceError("the attestations are not a step at the disputed position and a forward")
    if e.dishonest not in (e.step.attestation.node, e.forward.attestation.node):
        raise EvidenceError("the verdict names a node that is not party to the dispute")


def judge(e: Evidence, reference: torch.Tensor) -> Judgement:
    """Each side's error against a float32 reference of the disputed positions; the one beyond its
    dtype's tolerance is dishonest."""
    errors = {c.attestation.node: relative_error(c.output, reference) for c in (e.step, e.forward)}
    wrong = [c.attestation.node for c in (e.step, e.forward) if errors[c.attestation.node] > c.bound()]
    if len(wrong) != 1:
        return Judgement(False, None, "both sides agree with the reference" if not wrong else
                         "both sides disagree with the reference", errors)
    ok = wrong[0] == e.dishonest
    return Judgement(ok, wrong[0], "the verdict holds" if ok else f"the reference shows {wrong[0]} wrong instead",
                     errors)


def recompute(e: Evidence, store: ShardStore) -> torch.Tensor:
    """The disputed positions' output, computed in float32 from verified shards."""
    if bytes.fromhex(store.root) != e.root:
        raise EvidenceError(f"the evidence is about model root {e.root.hex()}, not this store's {store.root}")
    config = store.manifest.config
    if not 0 <= e.blocks[0] < e.blocks[1] <= store.manifest.num_blocks:
        raise EvidenceError(f"blocks {e.blocks[0]}:{e.blocks[1]} are not a span of this {store.manifest.num_blocks}-"
                            "block model")
    if e.prefix.shape[2] != config.hidden_size or e.prefix.shape[1] > config.max_context:
        raise EvidenceError(f"a prefix of {e.prefix.shape[1]} positions × {e.prefix.shape[2]} does not fit this model "
                            f"(hidden size {config.hidden_size}, at most {config.max_context} positions)")
    stack = store.load_blocks(e.blocks[0], e.blocks[1], dtype=torch.float32)
    with torch.inference_mode():
        return stack(e.prefix)[:, e.start:]


def check_evidence(e: Evidence, store: ShardStore) -> Judgement:
    """Verify a document completely and offline: signatures, digests, and a recomputation."""
    check_signatures(e)
    return judge(e, recompute(e, store))
