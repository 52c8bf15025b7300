"""Client-side verification: attestations on every step, spot checks on a sample, and judgement.

A spot check re-runs one step of one span as a stateless `forward` on another node serving the
same blocks (the prefix up to that step, which the client already keeps for failover) and
compares the outputs within the tolerance of the two nodes' dtypes. On disagreement the client
breaks the tie with its own float32 computation from its verified shards; the node that is wrong
is banned for good and signed evidence is written, logged and published.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import torch

from ledger.keys import Identity
from shards.blocks import BlockStack
from shards.store import ShardStore

from . import wire
from .attestation import FORWARD_SESSION, check_step_attestation, parse_attestation
from .errors import RoutingError
from .evidence import PPM, Claim, Evidence, relative_error, tolerance
from .records import ServerRecord

log = logging.getLogger(__name__)


class Referee:
    """The client's own float32 computation of a span, from shards it verified itself."""

    def __init__(self, store: ShardStore) -> None:
        self.store = store
        self._stacks: dict[tuple[int, int], BlockStack] = {}

    def _compute(self, blocks: tuple[int, int], prefix: torch.Tensor, last: int) -> torch.Tensor:
        if blocks not in self._stacks:
            self._stacks[blocks] = self.store.load_blocks(blocks[0], blocks[1], dtype=torch.float32)
        with torch.inference_mode():
            return self._stacks[blocks](prefix.float())[:, -last:]

    async def compute(self, blocks: tuple[int, int], prefix: torch.Tensor, last: int) -> torch.Tensor:
        """Off the event loop: loading and computing take real time."""
        return await asyncio.get_running_loop().run_in_executor(None, self._compute, blocks, prefix, last)


@dataclass
class CheckStats:
    checks: int = 0
    matches: int = 0
    mismatches: int = 0
    skipped: int = 0  # no other node serves the span, or the checker did not answer
    convicted: list[str] = field(default_factory=list)


async def attested_forward(link, record: ServerRecord, root: str, blocks: tuple[int, int],  # noqa: ANN001
                           prefix: torch.Tensor, last: int) -> Claim:
    """A stateless forward on `record`'s node, in its compute dtype, with its attestation checked."""
    peer = record.peer_id
    sent = prefix.to(wire.WIRE_DTYPES.get(record.dtype, torch.float32))
    reply = await link.request(peer, "swarmlm.forward", {
        "type": "forward", "v": wire.PROTOCOL_VERSION, "root": root, "blocks": list(blocks), "last": last,
        "hidden": wire.encode_tensor(sent)})
    out = wire.decode_tensor(reply.get("hidden"), hidden_size=prefix.shape[2], max_tokens=last,
                             max_batch=prefix.shape[0])
    att = check_step_attestation(parse_attestation(reply.get("attestation")), peer=peer, session=FORWARD_SESSION,
                                 step=0, start=0, root=root, blocks=blocks, dtype=record.dtype, sent=sent,
                                 received=out)
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

    def _checker(self, accused: str, blocks: tuple[int, int]) -> str | None:
        candidates = [r.peer_id for r in self.view.records.values()
                      if r.peer_id != accused and r.is_serving and r.peer_id not in self.view.bans
                      and r.start <= blocks[0] and blocks[1] <= r.end]
        return self.rng.choice(candidates) if candidates else None

    async def check(self, step: Claim, prefix: torch.Tensor) -> Evidence | None:
        """Spot-check one step; returns evidence if someone was caught (already banned), else None."""
        att = step.attestation
        blocks, n = att.blocks, step.output.shape[1]
        checker = self._checker(att.node, blocks)
        if checker is None:
            self.stats.skipped += 1
            return None
        try:
            other = await self._forward(checker, blocks, prefix, n)
        except RoutingError as e:
            log.info("spot check skipped: checker %s failed (%s)", checker[-8:], e)
            self.stats.skipped += 1
            return None
        self.stats.checks += 1
        if relative_error(step.output, other.output) <= tolerance(step.dtype, other.dtype):
            self.stats.matches += 1
            return None
        self.stats.mismatches += 1
        return await self._judge(step, other, prefix)

    async def _forward(self, peer: str, blocks: tuple[int, int], prefix: torch.Tensor, last: int) -> Claim:
        return await attested_forward(self.link, self.view.records[peer], self.view.root, blocks, prefix, last)

    async def _judge(self, step: Claim, forward: Claim, prefix: torch.Tensor) -> Evidence | None:
        """Break the tie with our own computation; ban and document whoever is wrong."""
        att = step.attestation
        if self.referee is None:
            log.warning("spot check mismatch on blocks %s between %s and %s, and no local shards to judge it",
                        att.blocks, att.node[-8:], forward.attestation.node[-8:])
            return None
        reference = await self.referee.compute(att.blocks, prefix, step.output.shape[1])
        errors = {c.attestation.node: relative_error(c.output, reference) for c in (step, forward)}
        wrong = [c.attestation.node for c in (step, forward)
                 if errors[c.attestation.node] > tolerance(c.dtype, "float32")]
        if len(wrong) != 1:
            log.warning("spot check on blocks %s: errors %s; no single node to blame", att.blocks, errors)
            return None
        dishonest = wrong[0]
        self.view.bans.ban_forever(dishonest)
        self.stats.convicted.append(dishonest)
        evidence = Evidence(root=att.manifest_root, blocks=att.blocks, start=att.start, prefix=prefix.float(),
                            step=step, forward=forward, dishonest=dishonest, errors_ppm={k: round(v * PPM) for k, v in errors.items()},
                            method="local", publisher=self.identity.peer_id, time_ns=time.time_ns()
                            ).signed(self.identity)
        log.error("DISHONEST NODE %s on blocks %d:%d (relative error %.2e against our float32 computation); "
                  "banned, evidence kept", dishonest, att.blocks[0], att.blocks[1], errors[dishonest])
        await self.on_evidence(evidence)
        return evidence
