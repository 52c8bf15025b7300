"""A generation session over a chain of nodes, which survives nodes that fail.

The client keeps, for every span boundary, the hidden states it sent into that span. When a node
fails (stream broken, timeout, error frame), it is banned for a while, a new chain is planned for
just its blocks, the kept inputs are replayed to rebuild the new nodes' caches, and the step
continues — so greedy output with a failure equals output without one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ledger.errors import LedgerError
from shards.errors import ShardsError

from . import dht as dht_io
from .client import SpanSession, SwarmClient, deserves_ban, gather_pings, is_node_failure
from .errors import NoRouteError, PeerFailure, RoutingError
from .evidence import Claim, Evidence, Judgement, check_evidence
from .planner import Hop, plan_route
from .records import ServerRecord
from .verification import Referee, Verifier
from .wire import PROTOCOL_VERSION, WIRE_DTYPES

log = logging.getLogger(__name__)


@dataclass
class Bans:
    """Failing peers are avoided for `base * 2**(failures-1)` seconds, capped."""

    base: float = 5.0
    cap: float = 300.0
    _until: dict[str, float] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)

    def ban(self, peer: str) -> float:
        n = self._failures[peer] = self._failures.get(peer, 0) + 1
        duration = min(self.cap, self.base * 2 ** (n - 1))
        self._until[peer] = max(self._until.get(peer, 0.0), time.monotonic() + duration)  # never shorten a ban
        return duration

    def ban_forever(self, peer: str) -> None:
        """For a node proven to compute wrong results: no backoff ends this."""
        self._until[peer] = float("inf")

    def __contains__(self, peer: object) -> bool:
        return isinstance(peer, str) and self._until.get(peer, 0.0) > time.monotonic()


class SwarmView:
    """What a client knows of the swarm for one model: records, round-trip times, bans."""

    def __init__(self, client: SwarmClient, root: str, num_blocks: int, refresh_after: float = 5.0,
                 referee: Referee | None = None) -> None:
        self.client, self.root, self.num_blocks = client, root, num_blocks
        self.refresh_after, self.referee = refresh_after, referee
        self.records: dict[str, ServerRecord] = {}
        self.rtt: dict[str, float] = {}
        self.bans = Bans()
        self.judged: dict[bytes, Judgement | None] = {}  # published evidence seen, by document digest
        self.distrusted: set[str] = set()  # publishers of evidence that did not hold up
        self._fetched = 0.0

    async def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._fetched < self.refresh_after and self.records:
            return
        self.records = await self.client.records(self.root, self.num_blocks)
        self.client.learn(self.records.values())
        self._fetched = time.monotonic()
        await self._review_evidence()
        new = [p for p, r in self.records.items() if p not in self.rtt and r.is_serving and p not in self.bans]
        for peer, result in (await gather_pings(self.client, new)).items():
            if isinstance(result, BaseException):  # slow is not dead: a session to it will tell
                log.info("node %s did not answer a ping (%s)", peer[-8:], result)
            elif result[1].get("root") != self.root or result[1].get("v") != PROTOCOL_VERSION:
                log.warning("node %s announces our model but serves root %s / protocol %s; avoiding it",
                            peer[-8:], result[1].get("root"), result[1].get("v"))
                self.bans.ban(peer)
            else:
                self.rtt[peer] = result[0]

    async def _review_evidence(self) -> None:
        """Check evidence others published: valid evidence bans its node for good, invalid is ignored."""
        if self.referee is None:
            return
        try:
            published = await dht_io.fetch_evidence(self.client.dht, self.root)
        except Exception as e:  # the DHT is best-effort
            log.debug("could not read published evidence: %s", e)
            return
        for publisher, document in published.items():
            digest = hashlib.sha256(document).digest()
            if digest in self.judged or publisher in self.distrusted:
                continue
            loop = asyncio.get_running_loop()
            try:
                evidence = Evidence.from_bytes(document)
                judgement = await loop.run_in_executor(None, check_evidence, evidence, self.referee.store)
            except (RoutingError, ShardsError, LedgerError) as e:
                judgement = Judgement(False, None, str(e), {})
            self.judged[digest] = judgement
            if judgement.valid and judgement.dishonest:
                log.warning("published evidence from %s holds: avoiding %s for good", publisher[-8:],
                            judgement.dishonest)
                self.bans.ban_forever(judgement.dishonest)
            else:
                log.warning("ignoring invalid evidence published by %s (%s)", publisher, judgement.reason)
                self.distrusted.add(publisher)

    async def plan(self, start: int, end: int, max_length: int = 1) -> list[Hop]:
        await self.refresh()
        try:
            return plan_route(self.records.values(), start, end, rtt=self.rtt, banned=self.bans, max_length=max_length)
        except NoRouteError:
            await self.refresh(force=True)
            return plan_route(self.records.values(), start, end, rtt=self.rtt, banned=self.bans, max_length=max_length)


ReceiptMaker = Callable[[SpanSession], "bytes | None"]


class RemoteRunner:
    """A `BlockRunner` whose blocks live on a chain of nodes (see module docstring for failover)."""

    def __init__(self, view: SwarmView, max_length: int, hidden_size: int, *, max_retries: int = 8,
                 step_tokens: int = 512, make_receipt: ReceiptMaker | None = None,
                 verifier: Verifier | None = None) -> None:
        self.view, self.client = view, view.client
        self.step_tokens, self.verifier = step_tokens, verifier
        self.max_length, self.hidden_size, self.max_retries = max_length, hidden_size, max_retries
        self.make_receipt = make_receipt
        self.session_id = secrets.token_hex(8)
        self.spans: list[SpanSession] = []
        self.inputs: dict[int, torch.Tensor] = {}  # block index -> (batch, max_length, hidden) sent into it
        self.length = 0
        self.failovers = 0
        self.closed_spans: list[SpanSession] = []

    def forward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        return self.client.run(self._forward(hidden, start))

    def close(self) -> None:
        self.client.run(self._close())

    async def _forward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        """Long prompts go in chunks of `step_tokens`, within every node's per-step limit."""
        if start > self.length:
            raise RoutingError(f"step starts at {start} but the session holds {self.length} tokens")
        if not self.spans:
            self.spans = await self._open_chain(0, self.view.num_blocks)
        outputs = []
        step = self._step_limit()
        for offset in range(0, hidden.shape[1], step):
            chunk = hidden[:, offset:offset + step]
            outputs.append(await self._through_chain(chunk, start + offset))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    def _step_limit(self) -> int:
        """Tokens per step: our chunk size, within every chained node's announced limit."""
        return min([self.step_tokens] + [s.hop.record.max_step_tokens for s in self.spans])

    async def _through_chain(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        h, i, failures = hidden, 0, 0
        while i < len(self.spans):
            span = self.spans[i]
            self._remember(span.hop.start, h, start)
            try:
                out = await span.step(h, start)
                if await self._caught(span, out, start + h.shape[1]):
                    failures += 1
                    await self._replace(i, start, PeerFailure(span.peer, "convicted by a spot check"),
                                        through_end=True)
                    continue
            except RoutingError as e:
                if not is_node_failure(e) or failures >= self.max_retries:
                    raise
                failures += 1
                await self._replace(i, start, e)
                continue
            h, i = out, i + 1
        self.length = start + hidden.shape[1]
        return h

    async def _caught(self, span: SpanSession, out: torch.Tensor, end: int) -> bool:
        """Spot-check a sample of steps; True when this span's node was proven wrong (its output unused)."""
        if self.verifier is None or not span.attestations or not self.verifier.sample():
            return False
        prefix = self.inputs[span.hop.start][:, :end]
        evidence = await self.verifier.check(Claim(span.attestations[-1], out), prefix)
        return evidence is not None and evidence.dishonest == span.peer

    def _remember(self, block: int, hidden: torch.Tensor, start: int) -> None:
        """Keep what entered `block` at positions [start, start+n), in float32 (exact for every wire dtype)."""
        buf = self.inputs.get(block)
        if buf is None:
            buf = self.inputs[block] = torch.zeros(hidden.shape[0], self.max_length, hidden.shape[2])
        buf[:, start:start + hidden.shape[1]] = hidden

    async def _open_chain(self, start: int, end: int, final_dtype: torch.dtype = torch.float32) -> list[SpanSession]:
        """Plan [start, end) and open a session on every hop, re-planning around nodes that refuse.

        Each node replies in the next node's compute dtype, the last one in `final_dtype`.
        """
        for _ in range(self.max_retries + 1):
            hops = await self.view.plan(start, end, self.max_length)
            dtypes = [WIRE_DTYPES.get(h.record.dtype, torch.float32) for h in hops[1:]] + [final_dtype]
            spans = [SpanSession(self.client, hop, self.view.root, self.session_id, self.max_length, dtype,
                                 attest=self.verifier is not None) for hop, dtype in zip(hops, dtypes)]
            try:
                for s in spans:
                    await s.open()
                return spans
            except RoutingError as e:
                for s in spans:
                    s.abort()
                if not is_node_failure(e):
                    raise
                bad = getattr(e, "peer", None)
                if bad:
                    self.view.bans.ban(bad)
                log.info("could not open a session (%s); re-planning", e)
        raise NoRouteError(f"could not open sessions covering blocks {start}:{end} after "
                           f"{self.max_retries + 1} attempts")

    async def _replace(self, i: int, start: int, error: RoutingError, through_end: bool = False) -> None:
        """Swap the failed span i for a fresh chain over its blocks, replaying positions [0, start).

        `through_end` also replays every later span: after a dishonest node, their caches may hold
        states computed from its outputs, and a step may rewrite positions it already holds.
        """
        failed = self.spans[i]
        failed.abort()
        self.failovers += 1
        a, b = failed.hop.start, failed.hop.end
        self._note_failure(failed.peer, a, b, error)
        for _ in range(self.max_retries + 1):
            new = await self._open_chain(a, b, failed.reply_dtype)
            try:
                await self._replay(new + (self.spans[i + 1:] if through_end else []), a, start)
            except RoutingError as e:
                for span in new:
                    span.abort()
                if not is_node_failure(e):
                    raise
                self._note_failure(getattr(e, "peer", ""), a, b, e)
                continue
            self.spans[i:i + 1] = new
            return
        raise NoRouteError(f"could not rebuild blocks {a}:{b} after {self.max_retries + 1} attempts")

    def _note_failure(self, peer: str, a: int, b: int, error: RoutingError) -> None:
        if deserves_ban(error):
            duration = self.view.bans.ban(peer)
            log.warning("node %s failed on blocks %d:%d (%s); banned for %.0fs, re-routing", peer[-8:], a, b, error,
                        duration)
        else:
            log.info("node %s closed our session on blocks %d:%d (%s); re-opening", peer[-8:], a, b, error)

    async def _replay(self, spans: list[SpanSession], block: int, length: int) -> None:
        """Rebuild fresh spans' caches from what entered `block` at positions [0, length), chunk by chunk."""
        step = min([self.step_tokens] + [s.hop.record.max_step_tokens for s in spans])
        for offset in range(0, length, step):
            h = self.inputs[block][:, offset:min(length, offset + step)]
            for span in spans:
                self._remember(span.hop.start, h, offset)
                h = await span.step(h, offset)

    async def _close(self) -> None:
        for span in self.spans:
            receipt = self.make_receipt(span) if self.make_receipt else None
            await span.close(receipt)
            self.closed_spans.append(span)
        self.spans = []

