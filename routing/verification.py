"""Client-side verification: attestations on every step, spot checks on a sample, and judgement.

A spot check re-runs one step of one span as a stateless `forward` on another node serving the
same blocks (the prefix up to that step, which the client already keeps for failover) and
compares the outputs within the tolerance of every rounding each went through (compute dtype,
the dtype it travelled in, quantization). On disagreement the client
breaks the tie with its own float32 computation from its verified shards; the node that is wrong
is banned for good and signed evidence is written, logged and published.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping

import torch

from ledger.keys import Identity
from shards.blocks import BlockStack
from shards.store import ShardStore

from . import protocol, wire
from .attestation import FORWARD_SESSION, Attestation, attest, check_step_attestation, parse_attestation
from .errors import PeerFailure, RoutingError
from .evidence import PPM, Claim, Evidence, relative_error
from .records import ServerRecord

log = logging.getLogger(__name__)


class Referee:
    """The client's own float32 computation of a span, from the base store it verified or a store it
    derived from it (quantized weights: computed exactly as an honest node of that root computes)."""

    def __init__(self, stores: Mapping[str, ShardStore]) -> None:
        self.stores = stores  # root -> store; routing.weights.AcceptedWeights adds derived ones
        self._stacks: dict[tuple[str, int, int], BlockStack] = {}

    def store_of(self, root: str) -> ShardStore | None:
        return self.stores.get(root)

    def _compute(self, root: str, blocks: tuple[int, int], prefix: torch.Tensor, last: int) -> torch.Tensor:
        key = (root, *blocks)
        if key not in self._stacks:
            self._stacks[key] = self.stores[root].load_blocks(blocks[0], blocks[1], dtype=torch.float32)
        with torch.inference_mode():
            return self._stacks[key](prefix.float())[:, -last:]

    async def compute(self, root: str, blocks: tuple[int, int], prefix: torch.Tensor, last: int) -> torch.Tensor:
        """Off the event loop: loading and computing take real time."""
        return await asyncio.get_running_loop().run_in_executor(None, self._compute, root, blocks, prefix, last)


@dataclass
class CheckStats:
    checks: int = 0
    matches: int = 0
    mismatches: int = 0
    skipped: int = 0  # no one to check with (no other node of those weights, no local shards), or no answer
    convicted: list[str] = field(default_factory=list)


async def attested_forward(link, record: ServerRecord, root: str, blocks: tuple[int, int],  # noqa: ANN001
                           prefix: torch.Tensor, last: int) -> Claim:
    """A stateless forward on `record`'s node, in its compute dtype, with its attestation checked.
    The output comes back in float32, so the check adds no rounding of its own to the node's."""
    peer = record.peer_id
    sent = prefix.to(wire.WIRE_DTYPES.get(record.dtype, torch.float32))
    reply = protocol.Result.parse(await link.request(peer, protocol.FORWARD, protocol.Forward(
        root, wire.encode_tensor(sent), blocks=blocks, reply_dtype="float32", last=last).to_wire()))
    out = wire.decode_tensor(reply.hidden, hidden_size=prefix.shape[2], max_tokens=last,
                             max_batch=prefix.shape[0], finite=True)
    if out.dtype != torch.float32:
        raise PeerFailure(peer, f"replied to a forward in {wire.dtype_name(out.dtype)}, asked for float32")
    att = check_step_attestation(parse_attestation(reply.attestation), peer=peer, session=FORWARD_SESSION,
                                 step=0, start=0, root=record.served_root or root, blocks=blocks, dtype=record.dtype,
                                 sent=sent, received=out, scheme=record.scheme or None)
    return Claim(att, out)


class Verifier:
    def __init__(self, link, view, rate: float, referee: Referee | None, identity: Identity,  # noqa: ANN001
                 on_evidence: Callable[[Evidence], Awaitable[None]], seed: int | None = None) -> None:
        self.link, self.view, self.rate = link, view, rate
        self.referee, self.identity, self.on_evidence = referee, identity, on_evidence
        self.rng = random.Random(seed)
        self.stats = CheckStats()

    def sample(self) -> bool:
        return self.rate > 0 and self.rng.random() < self.rate

    def _checker(self, accused: str, blocks: tuple[int, int], weights: bytes) -> str | None:
        """Another node serving the span with the same weights (root): only those compute comparably."""
        candidates = [r.peer_id for r in self.view.records.values()
                      if r.peer_id != accused and r.is_serving and r.peer_id not in self.view.bans
                      and r.start <= blocks[0] and blocks[1] <= r.end
                      and bytes.fromhex(r.served_root or self.view.root) == weights]
        return self.rng.choice(candidates) if candidates else None

    async def check(self, step: Claim, prefix: torch.Tensor) -> Evidence | None:
        """Spot-check one step; returns evidence if someone was caught (already banned), else None.

        The check re-runs the step on another node serving the same weights; where there is none,
        the client runs it itself (its claim signed like a node's), so no node goes unchecked."""
        att = step.attestation
        blocks, n = att.blocks, step.output.shape[1]
        checker = self._checker(att.node, blocks, att.manifest_root)
        try:
            if checker is not None:
                other = await self._forward(checker, blocks, prefix, n)
            elif self.referee is not None and self.referee.store_of(att.manifest_root.hex()) is not None:
                other = await self._own_claim(att, prefix, n)
            else:
                self.stats.skipped += 1
                return None
        except RoutingError as e:
            log.info("spot check skipped: checker %s failed (%s)", checker and checker[-8:], e)
            self.stats.skipped += 1
            return None
        self.stats.checks += 1
        if relative_error(step.output, other.output) <= step.bound(other):
            self.stats.matches += 1
            return None
        self.stats.mismatches += 1
        return await self._judge(step, other, prefix)

    async def _forward(self, peer: str, blocks: tuple[int, int], prefix: torch.Tensor, last: int) -> Claim:
        return await attested_forward(self.link, self.view.records[peer], self.view.root, blocks, prefix, last)

    async def _own_claim(self, att: Attestation, prefix: torch.Tensor, last: int) -> Claim:
        """The client's own float32 computation of the disputed span, attested by the client itself."""
        assert self.referee is not None
        out = await self.referee.compute(att.manifest_root.hex(), att.blocks, prefix, last)
        mine = attest(self.identity, session=FORWARD_SESSION, step=0, start=0, manifest_root=att.manifest_root,
                      blocks=att.blocks, dtype="float32", input_digest=wire.tensor_digest(prefix.float()),
                      output_digest=wire.tensor_digest(out), travel_dtype=wire.dtype_name(out.dtype),
                      base_root=att.base_root, scheme=att.scheme)
        return Claim(mine, out)

    async def _judge(self, step: Claim, forward: Claim, prefix: torch.Tensor) -> Evidence | None:
        """Break the tie with our own computation; ban and document whoever is wrong."""
        att = step.attestation
        if self.referee is None:
            log.warning("spot check mismatch on blocks %s between %s and %s, and no local shards to judge it",
                        att.blocks, att.node[-8:], forward.attestation.node[-8:])
            return None
        if self.referee.store_of(att.manifest_root.hex()) is None:
            log.warning("spot check mismatch on blocks %s of weights %s the client does not hold; no verdict",
                        att.blocks, att.manifest_root.hex()[:16])
            return None
        reference = await self.referee.compute(att.manifest_root.hex(), att.blocks, prefix, step.output.shape[1])
        errors = {c.attestation.node: relative_error(c.output, reference) for c in (step, forward)}
        wrong = [c.attestation.node for c in (step, forward) if errors[c.attestation.node] > c.bound()]
        if len(wrong) != 1:
            log.warning("spot check on blocks %s: errors %s; no single node to blame", att.blocks, errors)
            return None
        dishonest = wrong[0]
        self.view.bans.ban_forever(dishonest)
        self.stats.convicted.append(dishonest)
        evidence = Evidence(root=att.manifest_root, blocks=att.blocks, start=att.start, prefix=prefix.float(),
                            step=step, forward=forward, dishonest=dishonest,
                            errors_ppm={k: _ppm(v) for k, v in errors.items()},
                            method="local", publisher=self.identity.peer_id, time_ns=time.time_ns()
                            ).signed(self.identity)
        log.error("DISHONEST NODE %s on blocks %d:%d (relative error %.2e against our float32 computation); "
                  "banned, evidence kept", dishonest, att.blocks[0], att.blocks[1], errors[dishonest])
        await self.on_evidence(evidence)
        return evidence


def _ppm(error: float) -> int:
    """A relative error in millionths, as evidence records it (bounded: the document must encode)."""
    return round(error * PPM) if error * PPM < 2**62 else 2**62
