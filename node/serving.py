"""What the node's handlers share: the span, the step scheduler, the paged cache, sessions and limits.

Admission policy of the paged cache (`--cache-tokens` is the pool, or with `--grow-cache` what memory
holds beside the blocks, in `--page-tokens` pages):
  - opening a session reserves no pages; it is refused only when the client is at its session
    limit, the node is draining, or its ledger cannot record sessions;
  - each step takes the pages its new positions need (a rewinding step first gives back the pages
    past its end); who may take them when the pool is short — idle sessions first, then the
    largest holder above its fair share — is decided by node/admission.py, and carried out here:
    ended sessions' clients are told on their stream; no step is half-applied;
  - any session idle for `--session-timeout` seconds is closed, pressure or not.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ledger.keys import Identity
from routing import protocol, wire
from routing.attestation import attest
from routing.errors import ErrorCode, ProtocolError
from routing.grants import PushGrant, accept_grant
from routing.tasks import background
from shards.blocks import BlockStack
from shards.errors import CacheFullError
from shards.manifest import Quantization
from shards.paged_cache import PagedSequence, PagePool

from .admission import Admission
from .config import NodeConfig
from .limits import PeerBook, PeerLimits
from .metrics import NodeMetrics
from .ring import RingHead
from .scheduler import StepScheduler, Work
from .sessions import NodeSession, session_key
from . import streams

log = logging.getLogger(__name__)
MAX_EARLY_PUSHES = 256  # pushes waiting for their session's open frame, over all peers
MAX_EARLY_BYTES = 64 << 20  # the hidden states those waiting pushes hold, over all peers


@dataclass(frozen=True)
class Computed:
    """One step's or forward's result, ready for the reply frame and the attestation."""

    hidden: dict[str, Any]  # the output, encoded for the wire in the reply dtype
    input_digest: bytes
    output_digest: bytes


@dataclass
class Stats:
    """What the node has served: kept here for `info`/`node status`, and passed on to Prometheus."""

    metrics: NodeMetrics
    tokens: int = 0

    def step(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.metrics.tokens(tokens)
        self.metrics.step()
        self.metrics.rpc("inference", seconds)

    def forward(self, seconds: float) -> None:
        self.metrics.forward()
        self.metrics.rpc("forward", seconds)

    def session_opened(self) -> None:
        self.metrics.session_opened()

    def error(self, code: ErrorCode) -> None:
        self.metrics.error(code)


SessionEnd = Callable[[NodeSession, "bytes | None"], None]


class Serving:
    def __init__(self, config: NodeConfig, root: str, stack: BlockStack, identity: Identity, metrics: NodeMetrics,
                 on_session_end: SessionEnd, info_extra: Callable[[], dict[str, Any]],
                 can_record: Callable[[], bool] = lambda: True, weights_root: str | None = None,
                 quantization: Quantization | None = None, *, cache_tokens: int) -> None:
        self.config, self.root, self.identity, self.metrics = config, root, identity, metrics
        self.cache_tokens = cache_tokens  # the pool: `--cache-tokens`, or grown (node/memory.py `pool_tokens`)
        self.weights_root = weights_root or root  # the root of what it computes with (a derived store's own)
        self.quantization = quantization
        self.peer_id = identity.peer_id
        self.on_session_end, self.info_extra, self.can_record = on_session_end, info_extra, can_record
        self.hidden_size = stack.config.hidden_size
        self.max_length = min(config.max_session_length, stack.config.max_context)
        self.sessions: dict[str, NodeSession] = {}
        self._opened: dict[str, asyncio.Event] = {}  # pushes that arrived before their session's open
        self._early_waiting = self._early_bytes = 0  # those pushes, and the hidden-state bytes they hold
        self.draining = False
        self.stats = Stats(metrics)
        self.started = time.time()
        self.read_budget = wire.ReadBudget(config.read_budget_bytes)
        self.forward_pages = 0  # held by stateless forwards (chunked through temporary pages), all peers together
        # One book for the node's life: a move must not forget the streams, sessions and pages peers hold.
        self.book = PeerBook(PeerLimits(config.peer_max_streams, config.peer_max_sessions,
                                        config.peer_opens_per_minute))
        self.admission = Admission(-(-cache_tokens // config.page_tokens),
                                   -(-(config.peer_cache_tokens or cache_tokens // 2) // config.page_tokens),
                                   config.evict_idle_after)
        self.scheduler: StepScheduler | None = None
        self.ring_head: RingHead | None = None  # with --ring: this node can embed and sample (node/ring.py)
        self.num_blocks = stack.config.num_layers
        self.stack = stack

    # ---- the span ---------------------------------------------------------------------------------

    @property
    def stack(self) -> BlockStack:
        return self._stack

    @stack.setter
    def stack(self, stack: BlockStack) -> None:
        """A new span (start, or a move after draining): a scheduler for it, and its cache pool. A move
        keeps the span's length, dtype and device, so it keeps the pool too (of the same size: its sessions
        ended, and a busy one's pages come back after its step); a second pool beside it while the first is
        let go would need twice a grown pool's memory."""
        c = self.config
        self._stack = stack
        self.dtype, self.device = stack.dtype, stack.device
        pages = -(-self.cache_tokens // c.page_tokens)
        shape = (len(stack.blocks), stack.config.num_kv_heads, pages, c.page_tokens, stack.config.head_dim)
        old_pool = getattr(self, "pool", None)
        if old_pool is None or (old_pool.keys.shape, old_pool.keys.dtype, old_pool.keys.device) != (
                shape, self.dtype, self.device):
            self.pool = PagePool(len(stack.blocks), stack.config.num_kv_heads, stack.config.head_dim, pages,
                                 page_tokens=c.page_tokens, dtype=self.dtype, device=self.device)
        # Forwards from a few identities would otherwise hold every page and leave sessions `cache_full`.
        self.max_forward_pages = max(pages // 4, self.pool.pages_for(c.max_batch_tokens))
        old = self.scheduler
        self.scheduler = StepScheduler(stack, max_batch_tokens=c.max_batch_tokens, prefill_chunk=c.prefill_chunk,
                                       peer_queue_tokens=c.peer_queue_tokens, batching=c.batching,
                                       on_batch=self.metrics.batch)
        if old is not None:
            background(old.stop(), "retiring the old scheduler")
            self.scheduler.start()

    async def start(self) -> None:
        assert self.scheduler is not None
        self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()

    @property
    def cache_tokens_used(self) -> int:
        return self.pool.used_pages * self.pool.page_tokens

    @property
    def cache_tokens_free(self) -> int:
        return self.pool.free_pages * self.pool.page_tokens

    def info(self) -> dict[str, Any]:
        declared = protocol.InfoReply(v=wire.PROTOCOL_VERSION, peer_id=self.peer_id, root=self.root,
                                      start=self.stack.start, end=self.stack.end)
        return {**declared.to_wire(), "weights_root": self.weights_root,
                "scheme": self.quantization.scheme if self.quantization else None,
                "dtype": wire.dtype_name(self.dtype), "device": self.device.type,
                "versions": {"protocol": wire.PROTOCOL_VERSION, "swarmlm": _version()},
                "load": {"sessions": len(self.sessions), "cache_tokens_used": self.cache_tokens_used,
                         "cache_tokens_free": self.cache_tokens_free},
                "scheduler": {"iterations": self.scheduler.iterations if self.scheduler else 0,
                              "largest_batch": self.scheduler.largest_batch if self.scheduler else 0},
                "draining": self.draining, "uptime_s": round(time.time() - self.started, 1),
                "tokens_served": self.stats.tokens, **self.info_extra()}

    # ---- frames -----------------------------------------------------------------------------------

    @property
    def max_frame(self) -> int:
        return 4096 + self.config.max_batch * self.config.max_step_tokens * self.hidden_size * 4

    def decode_hidden(self, hidden: dict[str, Any], max_batch: int) -> torch.Tensor:
        """The hidden states as received: a checked view of the frame's bytes, converted later in the worker."""
        return wire.decode_tensor(hidden, hidden_size=self.hidden_size, max_tokens=self.config.max_step_tokens,
                                  max_batch=max_batch)

    def reply_dtype(self, name: str | None) -> torch.dtype:
        """The dtype a client asked its replies in (a parsed frame's name), else ours."""
        return self.dtype if name is None else wire.WIRE_DTYPES[name]

    def span(self, root: str, blocks: tuple[int, int] | None) -> BlockStack:
        """The model root must be ours; `blocks` may pick a sub-span of what this node serves."""
        if root != self.root:
            raise ProtocolError(ErrorCode.WRONG_MODEL, f"this node serves model root {self.root}, not {root!r:.80}")
        if blocks is None:
            return self.stack
        s = self.stack
        if not s.start <= blocks[0] < blocks[1] <= s.end:
            raise ProtocolError(ErrorCode.WRONG_MODEL, f"blocks {list(blocks)} are not within this node's "
                                                       f"{s.start}:{s.end}")
        return s.narrow(blocks[0], blocks[1])

    def _finish(self, received: torch.Tensor, reply_dtype: torch.dtype, last: int | None = None
                ) -> Callable[[torch.Tensor], Computed]:
        """The reply's work for the compute thread: a max-size step hashes and converts about 100 ms
        of bytes, which would otherwise stall every session on the event loop."""

        def finish(out: torch.Tensor) -> Computed:
            if not bool(torch.isfinite(out).all()):
                raise ProtocolError(ErrorCode.BAD_TENSOR, "the output is not finite: the input's values are out of "
                                                          "the range these blocks compute on")
            out = (out if last is None else out[:, -last:]).to(device="cpu", dtype=reply_dtype).contiguous()  # once
            return Computed(wire.encode_tensor(out), wire.tensor_digest(received), wire.tensor_digest(out))

        return finish

    def attestation(self, session: str, step: int, start: int, span: BlockStack, done: Computed) -> dict[str, Any]:
        q = self.quantization
        return attest(self.identity, session=session, step=step, start=start,
                      manifest_root=bytes.fromhex(self.weights_root), blocks=(span.start, span.end),
                      dtype=wire.dtype_name(self.dtype), input_digest=done.input_digest,
                      output_digest=done.output_digest, travel_dtype=done.hidden["dtype"],
                      base_root=bytes.fromhex(self.root) if q else None,
                      scheme=q.scheme if q else None).to_wire()

    # ---- cache pages --------------------------------------------------------------------------------

    def _grow(self, peer: str, rows: list[PagedSequence], end: int, exclude: NodeSession | None = None) -> None:
        """Give `rows` exactly the pages positions [0, end) need, as admission decides."""
        delta = sum(r.pages_needed(end) for r in rows)
        decision = self.admission.admit(peer, delta, self.pool.free_pages, self.sessions.values(), exclude)
        for eviction in decision.evict:
            self.expire(eviction.session, eviction.code, eviction.reason)
        if not decision.admitted:
            raise self._cache_full()
        try:
            for row in rows:
                before = row.num_pages
                row.resize(end)
                self.admission.charge(peer, row.num_pages - before)
        except CacheFullError:
            raise self._cache_full() from None

    def _cache_full(self) -> ProtocolError:
        return ProtocolError(ErrorCode.CACHE_FULL, f"cache full: {self.pool.free_pages} of {self.pool.num_pages} "
                                                   "pages free, no idle session to evict and no peer above its fair "
                                                   "share; continue on another node")

    def _release(self, peer: str, rows: list[PagedSequence]) -> None:
        for row in rows:
            self.admission.charge(peer, -row.num_pages)
            row.release()

    # ---- sessions ---------------------------------------------------------------------------------

    def open_session(self, frame: protocol.Open, client: str, writer: asyncio.StreamWriter) -> NodeSession:
        span = self.span(frame.root, frame.blocks)
        session_id, max_length, batch = frame.session, frame.max_length, frame.batch
        if batch > self.config.max_batch:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"batch must be 1..{self.config.max_batch}, got {batch}")
        if max_length > self.max_length:
            raise ProtocolError(ErrorCode.MAX_LENGTH, f"max_length {max_length} exceeds this node's limit "
                                                      f"{self.max_length}")
        if self.draining:
            raise ProtocolError(ErrorCode.DRAINING, "this node is draining and takes no new sessions")
        if not self.can_record():
            raise ProtocolError(ErrorCode.LEDGER_UNAVAILABLE, "this node cannot write its ledger right now, so it "
                                                              "takes no sessions it could not record; use another node")
        grant = self._push_grant(frame.grant, client, session_id, span)  # every check before the session
        # counts against its peer
        key = session_key(client, session_id)
        if key in self.sessions:  # its client gave up the old stream (say, through a relay that stalled)
            self.expire(self.sessions[key], ErrorCode.SESSION_EXPIRED, "its client opened it again on another stream")
        self.book.add_session(client)
        session = NodeSession(session_id, client, span, [PagedSequence(self.pool) for _ in range(batch)], max_length,
                              self.reply_dtype(frame.reply_dtype), frame.attest, writer, grant,
                              frame.next_maddrs if grant else [])
        session.budget.required = frame.tickets  # its pushed steps come with tickets
        self.sessions[key] = session
        self._opened.pop(key, asyncio.Event()).set()
        self.stats.session_opened()
        log.info("session open   %s client=%s blocks=%d:%d max_length=%d%s", session_id, client[-8:],
                 span.start, span.end, max_length, f" push→{session.next_peer[-8:]}" if session.next_peer else "",
                 extra={"event": "session_open", "session": session_id, "client": client,
                        "blocks": [span.start, span.end], "max_length": max_length})
        return session

    def holds(self, session: NodeSession) -> bool:
        """Whether `session` is still open here: not ended, nor replaced by its client's re-open."""
        return self.sessions.get(session.key) is session

    def _push_grant(self, grant: Any, client: str, session_id: str, span: BlockStack) -> PushGrant | None:
        if grant is None:
            return None
        return accept_grant(grant, client=client, session=session_id, node=self.peer_id, root=self.root,
                            blocks=(span.start, span.end))

    def route(self, session: NodeSession, frame: protocol.Route) -> None:
        """The client re-planned around a failure: new neighbours for this session."""
        session.grant = self._push_grant(frame.grant, session.client, session.session_id, session.stack)
        session.next_maddrs = frame.next_maddrs if session.grant else []

    async def wait_session(self, client: str, session_id: str, timeout: float, held: int) -> NodeSession | None:
        """The session, waiting briefly for its open: a push may outrun the client's open frame.

        Waiting pushes are bounded in number and in the `held` bytes of hidden states they keep
        (anyone can push before being checked); past either bound a push does not wait."""
        key = session_key(client, session_id)
        if (key not in self.sessions and self._early_waiting < MAX_EARLY_PUSHES
                and self._early_bytes + held <= MAX_EARLY_BYTES):
            event = self._opened.setdefault(key, asyncio.Event())
            self._early_waiting += 1
            self._early_bytes += held
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._early_waiting -= 1
                self._early_bytes -= held
                if self._opened.get(key) is event and not event.is_set():
                    del self._opened[key]
        return self.sessions.get(key)

    async def step(self, session: NodeSession, hidden: torch.Tensor, start: int) -> tuple[int, Computed]:
        """Run one step of `session` through the scheduler; returns its index and result."""
        n = hidden.shape[1]
        if hidden.shape[0] != session.batch:
            raise ProtocolError(ErrorCode.BAD_TENSOR, f"batch {hidden.shape[0]} differs from the session's "
                                                      f"{session.batch}")
        if start > session.length:
            raise ProtocolError(ErrorCode.BAD_POSITION, f"step starts at position {start}, but the session holds "
                                                        f"{session.length} tokens; steps must not leave gaps")
        if start + n > session.max_length:
            raise ProtocolError(ErrorCode.MAX_LENGTH, f"session max length {session.max_length} exceeded: "
                                                      f"positions {start}..{start + n - 1}")
        if not self.holds(session):
            raise ProtocolError(ErrorCode.SESSION_EXPIRED, "this session has ended on this node; reopen it")
        started = time.perf_counter()
        self._grow(session.client, session.rows, start + n, exclude=session)
        session.rewind_to(start)  # once admitted: a refused step leaves the session's counts as they were
        assert self.scheduler is not None
        done = await self.scheduler.submit(Work(session.client, session.stack, hidden, start, session.rows,
                                                self._finish(hidden, session.reply_dtype)))
        index = session.record_step(start, n, done.input_digest, done.output_digest)
        self.stats.step(n * session.batch, time.perf_counter() - started)
        return index, done

    async def forward(self, peer: str, span: BlockStack, hidden: torch.Tensor, reply_dtype: torch.dtype,
                      last: int) -> Computed:
        """A stateless pass from position 0; long ones are chunked through temporary cache pages, of
        which all forwards together may hold `max_forward_pages` (beyond: `busy`)."""
        assert self.scheduler is not None
        started = time.perf_counter()
        rows: list[PagedSequence] = []
        if hidden.shape[0] * hidden.shape[1] > self.config.prefill_chunk:
            rows = [PagedSequence(self.pool) for _ in range(hidden.shape[0])]
        pages = len(rows) * self.pool.pages_for(hidden.shape[1])
        if self.forward_pages + pages > self.max_forward_pages:
            raise ProtocolError(ErrorCode.BUSY, f"stateless forwards hold {self.forward_pages} of the "
                                                f"{self.max_forward_pages} cache pages they may use; retry later")
        self.forward_pages += pages
        try:
            self._grow(peer, rows, hidden.shape[1])  # inside: pages of rows grown before a refusal come back
            done = await self.scheduler.submit(Work(peer, span, hidden, 0, rows or None,
                                                    self._finish(hidden, reply_dtype, last)))
        finally:
            self.forward_pages -= pages
            self._release(peer, rows)
        self.stats.forward(time.perf_counter() - started)
        return done

    def close(self, session: NodeSession, receipt: Any, final_length: int | None = None) -> None:
        """End a session: free its pages, then log it (never skipped, whatever the receipt holds)."""
        if not self.holds(session):
            return
        del self.sessions[session.key]
        if final_length is not None:
            session.rewind_to(final_length)
        if session.busy:  # a step (say, a pushed one) computes on its pages: they come back after it
            background(self._release_when_idle(session), "releasing a busy session's pages")
        else:
            self._release(session.client, session.rows)
        self.book.remove_session(session.client)
        duration = (time.time_ns() - session.opened_ns) / 1e9
        log.info("session close  %s client=%s blocks=%d:%d tokens=%d accepted=%d steps=%d duration=%.1fs receipt=%s",
                 session.session_id, session.client[-8:], session.stack.start, session.stack.end, session.tokens,
                 session.accepted, session.steps, duration, "yes" if receipt else "no",
                 extra={"event": "session_close", "session": session.session_id, "client": session.client,
                        "blocks": [session.stack.start, session.stack.end], "tokens": session.tokens,
                        "accepted_tokens": session.accepted, "steps": session.steps,
                        "duration_s": round(duration, 3), "receipted": bool(receipt)})
        self.on_session_end(session, receipt if isinstance(receipt, bytes) else None)

    async def _release_when_idle(self, session: NodeSession) -> None:
        async with session.lock:
            self._release(session.client, session.rows)

    def expire(self, session: NodeSession, code: ErrorCode, reason: str) -> None:
        """End a session from the node's side; its client is told at once on its stream."""
        if not self.holds(session):
            return
        self.close(session, None)
        background(self._tell(session, protocol.Error(code.value, reason).to_wire()),
                   "telling a client its session expired")

    @staticmethod
    async def _tell(session: NodeSession, frame: dict[str, Any]) -> None:
        """Send the session's last frame, then close its stream LINGER_S later (sooner if the client
        closes it: the session's read loop sees the end, and the stream's guard closes it). Closing at
        once let p2pd reset the stream ahead of the frame now and then (`streams.linger`), and the client
        met a bare end of stream where `session_expired` or `draining` should have been."""
        try:
            await session.send(frame)
        except (ConnectionError, RuntimeError):
            pass
        await asyncio.sleep(streams.LINGER_S)
        session.writer.close()

    async def expire_idle(self) -> int:
        """Close sessions idle longer than the session timeout."""
        limit = self.config.session_timeout
        idle = [s for s in self.sessions.values() if not s.busy and time.monotonic() - s.last_active > limit]
        for session in idle:
            self.expire(session, ErrorCode.SESSION_EXPIRED,
                        f"session idle for more than {limit:.0f}s; its cache was freed — reopen it")
        return len(idle)

    async def drain(self, grace: float) -> None:
        """Refuse new sessions, let live ones finish for up to `grace` seconds, then end the rest."""
        self.draining = True
        deadline = time.monotonic() + grace
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for session in list(self.sessions.values()):
            self.expire(session, ErrorCode.DRAINING, "this node is leaving; continue on another node")


def _version() -> str:
    try:
        return importlib.metadata.version("swarmlm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
