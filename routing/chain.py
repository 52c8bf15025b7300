"""A generation session over a chain of nodes, which survives nodes that fail.

The client keeps, for every span boundary, the hidden states it sent into that span. When a node
fails (stream broken, timeout, error frame), it is banned for a while, a new chain is planned for
just its blocks, the kept inputs are replayed to rebuild the new nodes' caches, and the step
continues — so greedy output with a failure equals output without one.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .client import SpanSession, SwarmClient, deserves_ban, gather_pings, is_node_failure
from .errors import NoRouteError, RoutingError
from .planner import Hop, plan_route
from .records import ServerRecord
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
        self._until[peer] = time.monotonic() + duration
        return duration

    def __contains__(self, peer: object) -> bool:
        return isinstance(peer, str) and self._until.get(peer, 0.0) > time.monotonic()


class SwarmView:
    """What a client knows of the swarm for one model: records, round-trip times, bans."""

    def __init__(self, client: SwarmClient, root: str, num_blocks: int, refresh_after: float = 5.0) -> None:
        self.client, self.root, self.num_blocks = client, root, num_blocks
        self.refresh_after = refresh_after
        self.records: dict[str, ServerRecord] = {}
        self.rtt: dict[str, float] = {}
        self.bans = Bans()
        self._fetched = 0.0

    async def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._fetched < self.refresh_after and self.records:
            return
        self.records = await self.client.records(self.root, self.num_blocks)
        self.client.learn(self.records.values())
        self._fetched = time.monotonic()
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
                 step_tokens: int = 512, make_receipt: ReceiptMaker | None = None) -> None:
        self.view, self.client = view, view.client
        self.step_tokens = step_tokens
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
                h = await span.step(h, start)
            except RoutingError as e:
                if not is_node_failure(e) or failures >= self.max_retries:
                    raise
                failures += 1
                await self._replace(i, start, e)
                continue
            i += 1
        self.length = start + hidden.shape[1]
        return h

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
            spans = [SpanSession(self.client, hop, self.view.root, self.session_id, self.max_length, dtype)
                     for hop, dtype in zip(hops, dtypes)]
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

    async def _replace(self, i: int, start: int, error: RoutingError) -> None:
        """Swap the failed span i for a fresh chain over its blocks, replaying positions [0, start)."""
        failed = self.spans[i]
        failed.abort()
        self.failovers += 1
        a, b = failed.hop.start, failed.hop.end
        self._note_failure(failed.peer, a, b, error)
        for _ in range(self.max_retries + 1):
            new = await self._open_chain(a, b, failed.reply_dtype)
            try:
                await self._replay(new, a, start)
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

