"""The node's RPC handlers: info, stateless forward, and inference sessions with a KV cache.

Handlers run on the event loop and only parse, validate and reply; all tensor compute runs on
one worker thread, so a slow step never stalls other streams' I/O. Every frame is validated
before use; a bad frame gets a typed error frame, and only a broken stream ends a session.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from ledger.keys import Identity
from routing import wire
from routing.attestation import FORWARD_SESSION, attest
from routing.errors import ErrorCode, ProtocolError
from shards.blocks import BlockStack

from .config import NodeConfig
from .memory import CachePool
from .metrics import NodeMetrics
from .sessions import NodeSession

log = logging.getLogger(__name__)
MAX_SESSION_ID = 64


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
    steps: int = 0
    forwards: int = 0
    sessions_opened: int = 0

    def step(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.steps += 1
        self.metrics.tokens(tokens)
        self.metrics.step()
        self.metrics.rpc("inference", seconds)

    def forward(self, seconds: float) -> None:
        self.forwards += 1
        self.metrics.forward()
        self.metrics.rpc("forward", seconds)

    def session_opened(self) -> None:
        self.sessions_opened += 1
        self.metrics.session_opened()

    def error(self, code: ErrorCode) -> None:
        self.metrics.error(code)


SessionEnd = Callable[[NodeSession, "bytes | None"], None]


class Serving:
    """Everything the handlers share: the span, the compute thread, the cache pool, live sessions."""

    def __init__(self, config: NodeConfig, root: str, stack: BlockStack, identity: Identity, metrics: NodeMetrics,
                 on_session_end: SessionEnd, info_extra: Callable[[], dict[str, Any]]) -> None:
        self.config, self.root, self.stack, self.identity = config, root, stack, identity
        self.peer_id = identity.peer_id
        self.on_session_end, self.info_extra = on_session_end, info_extra
        self.dtype = stack.blocks[0].self_attn.o_proj.weight_t.dtype
        self.device = stack.blocks[0].self_attn.o_proj.weight_t.device
        self.hidden_size = stack.config.hidden_size
        self.max_length = min(config.max_session_length, stack.config.max_context)
        self.pool = CachePool(config.cache_tokens)
        self.sessions: dict[str, NodeSession] = {}
        self._ended: dict[str, tuple[ErrorCode, str]] = {}  # sessions the node ended, told on their next frame
        self.draining = False
        self.stats = Stats(metrics)
        self.started = time.time()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="compute")

    async def compute(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def info(self) -> dict[str, Any]:
        return {"type": "info", "v": wire.PROTOCOL_VERSION, "peer_id": self.peer_id, "root": self.root,
                "start": self.stack.start, "end": self.stack.end, "dtype": wire.dtype_name(self.dtype),
                "device": self.device.type, "versions": {"protocol": wire.PROTOCOL_VERSION, "swarmlm": _version()},
                "load": {"sessions": len(self.sessions), "cache_tokens_used": self.pool.used,
                         "cache_tokens_free": self.pool.free},
                "draining": self.draining, "uptime_s": round(time.time() - self.started, 1),
                "tokens_served": self.stats.tokens, **self.info_extra()}

    def _decode_hidden(self, frame: dict[str, Any], max_batch: int) -> torch.Tensor:
        """The hidden states as received: a checked view of the frame's bytes, converted later in the worker."""
        return wire.decode_tensor(frame.get("hidden"), hidden_size=self.hidden_size,
                                  max_tokens=self.config.max_step_tokens, max_batch=max_batch)

    def _computed(self, run: Callable[[torch.Tensor], torch.Tensor], received: torch.Tensor,
                  reply_dtype: torch.dtype, last: int | None = None) -> Computed:
        """Everything proportional to the tensors, for the compute worker: a max-size step hashes and
        converts about 100 ms of bytes, which would otherwise stall every session on the event loop."""
        input_digest = wire.tensor_digest(received)  # the bytes as received are what the client attests
        with torch.inference_mode():
            out = run(received.to(device=self.device, dtype=self.dtype))
        out = (out if last is None else out[:, -last:]).to(reply_dtype)
        return Computed(wire.encode_tensor(out), input_digest, wire.tensor_digest(out))

    def _attest(self, session: str, step: int, start: int, span: BlockStack, input_digest: bytes,
                output_digest: bytes) -> dict[str, Any]:
        return attest(self.identity, session=session, step=step, start=start, manifest_root=bytes.fromhex(self.root),
                      blocks=(span.start, span.end), dtype=wire.dtype_name(self.dtype), input_digest=input_digest,
                      output_digest=output_digest).to_wire()

    def _reply_dtype(self, frame: dict[str, Any]) -> torch.dtype:
        name = frame.get("reply_dtype")
        if name is None:
            return self.dtype
        if name not in wire.WIRE_DTYPES:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"reply_dtype {name!r} is not one of {', '.join(wire.WIRE_DTYPES)}")
        return wire.WIRE_DTYPES[name]

    def _span(self, frame: dict[str, Any]) -> BlockStack:
        """The model root must be ours; `blocks` may pick a sub-span of what this node serves."""
        root = frame.get("root")
        if root != self.root:
            raise ProtocolError(ErrorCode.WRONG_MODEL, f"this node serves model root {self.root}, not {root!r}")
        blocks = frame.get("blocks")
        if blocks is None:
            return self.stack
        s = self.stack
        if not (isinstance(blocks, list) and len(blocks) == 2 and all(type(b) is int for b in blocks)
                and s.start <= blocks[0] < blocks[1] <= s.end):
            raise ProtocolError(ErrorCode.WRONG_MODEL, f"blocks {blocks!r} are not within this node's {s.start}:{s.end}")
        return s.narrow(blocks[0], blocks[1])

    # ---- handlers -------------------------------------------------------------------------------

    async def handle_info(self, info: StreamInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def serve() -> None:
            wire.check_opening(await wire.read_frame(reader), "info")
            info = await asyncio.get_running_loop().run_in_executor(None, self.info)  # it reads the ledger
            await wire.write_frame(writer, info)

        await self.guard(serve, writer, info, "info")

    async def handle_forward(self, info: StreamInfo, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        async def serve() -> None:
            frame = await wire.read_frame(reader, self.max_frame)
            wire.check_opening(frame, "forward")
            span = self._span(frame)
            hidden = self._decode_hidden(frame, self.config.max_batch)
            reply_dtype = self._reply_dtype(frame)
            last = frame.get("last", hidden.shape[1])  # spot checks want only the final positions back
            if type(last) is not int or not 1 <= last <= hidden.shape[1]:
                raise ProtocolError(ErrorCode.BAD_FRAME, f"'last' must be 1..{hidden.shape[1]}, got {last!r}")
            started = time.perf_counter()
            done = await self.compute(self._computed, span, hidden, reply_dtype, last)
            self.stats.forward(time.perf_counter() - started)
            reply = {"type": "result", "hidden": done.hidden}
            if frame.get("attest", True):
                reply["attestation"] = self._attest(FORWARD_SESSION, 0, 0, span, done.input_digest, done.output_digest)
            await wire.write_frame(writer, reply)

        await self.guard(serve, writer, info)

    async def handle_inference(self, info: StreamInfo, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        holder: list[NodeSession] = []

        async def serve() -> None:
            frame = await wire.read_frame(reader, self.max_frame)
            wire.check_opening(frame, "open")
            session = await self._open(frame, info.peer_id.to_base58())
            holder.append(session)
            attesting = frame.get("attest", True) is not False
            reply_dtype = self._reply_dtype(frame)
            await wire.write_frame(writer, {"type": "opened", "session": session.session_id,
                                            "max_length": session.max_length, "dtype": wire.dtype_name(self.dtype)})
            while True:
                try:
                    frame = await wire.read_frame(reader, self.max_frame)
                    if session.key in self._ended:
                        code, reason = self._ended.pop(session.key)
                        holder.clear()
                        await wire.write_frame(writer, wire.error_frame(code, reason))
                        return
                    if frame.get("session") != session.session_id:
                        raise ProtocolError(ErrorCode.UNKNOWN_SESSION,
                                            f"session {frame.get('session')!r} is not open on this stream "
                                            f"(open: {session.session_id!r})")
                    if frame["type"] == "close":
                        self._close(session, frame.get("receipt"))
                        holder.clear()
                        await wire.write_frame(writer, {"type": "closed", "session": session.session_id,
                                                        "tokens": session.tokens})
                        return
                    if frame["type"] != "step":
                        raise ProtocolError(ErrorCode.BAD_FRAME, f"unexpected '{frame['type']}' frame in a session")
                    await wire.write_frame(writer, await self._step(session, frame, reply_dtype, attesting))
                except ProtocolError as e:
                    if e.code == ErrorCode.TOO_LARGE and "frame of" in str(e):
                        raise  # the stream cannot be resynchronised after an oversized frame
                    self.stats.error(e.code)
                    await wire.write_frame(writer, wire.error_frame(e.code, str(e)))

        try:
            await self.guard(serve, writer, info)
        finally:
            if holder:  # the stream ended without a close frame: still log the session, unreceipted
                self._close(holder[0], None)
                self._ended.pop(holder[0].key, None)

    def expire(self, session: NodeSession, code: ErrorCode, reason: str) -> None:
        """End a session from the node's side, freeing its cache; its client learns why on its next frame."""
        self._ended[session.key] = (code, reason)
        self._close(session, None)

    async def expire_idle(self) -> int:
        """Free the caches of sessions idle longer than the session timeout."""
        limit = self.config.session_timeout
        idle = [s for s in self.sessions.values() if time.monotonic() - s.last_active > limit]
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

    @property
    def max_frame(self) -> int:
        itemsize = 4
        return 4096 + self.config.max_batch * self.config.max_step_tokens * self.hidden_size * itemsize

    async def _open(self, frame: dict[str, Any], client: str) -> NodeSession:
        span = self._span(frame)
        session_id = wire.field(frame, "session", str)
        if not 0 < len(session_id) <= MAX_SESSION_ID:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"session id must be 1..{MAX_SESSION_ID} characters")
        max_length = wire.field(frame, "max_length", int, minimum=1)
        batch = frame.get("batch", 1)
        if type(batch) is not int or not 1 <= batch <= self.config.max_batch:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"batch must be 1..{self.config.max_batch}, got {batch!r}")
        if max_length > self.max_length:
            raise ProtocolError(ErrorCode.MAX_LENGTH, f"max_length {max_length} exceeds this node's limit "
                                                      f"{self.max_length}")
        if self.draining:
            raise ProtocolError(ErrorCode.DRAINING, "this node is draining and takes no new sessions")
        if f"{client}/{session_id}" in self.sessions:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"session {session_id!r} is already open")
        reservation = self.pool.reserve(batch * max_length)
        try:
            cache = await self.compute(span.new_cache, batch, max_length)
        except BaseException:
            reservation.release()
            raise
        session = NodeSession(session_id, client, span, cache, reservation, max_length, batch)
        self.sessions[session.key] = session
        self.stats.session_opened()
        log.info("session open   %s client=%s blocks=%d:%d max_length=%d", session_id, client[-8:],
                 span.start, span.end, max_length,
                 extra={"event": "session_open", "session": session_id, "client": client,
                        "blocks": [span.start, span.end], "max_length": max_length})
        return session

    async def _step(self, session: NodeSession, frame: dict[str, Any], reply_dtype: torch.dtype,
                    attesting: bool) -> dict[str, Any]:
        step = wire.field(frame, "step", int, minimum=0)
        start = wire.field(frame, "start", int, minimum=0)
        hidden = self._decode_hidden(frame, session.batch)
        if hidden.shape[0] != session.batch:
            raise ProtocolError(ErrorCode.BAD_TENSOR, f"batch {hidden.shape[0]} differs from the session's "
                                                      f"{session.batch}")
        n = hidden.shape[1]
        if start > session.cache.length:
            raise ProtocolError(ErrorCode.BAD_POSITION, f"step starts at position {start}, but the session holds "
                                                        f"{session.cache.length} tokens; steps must not leave gaps")
        if start + n > session.max_length:
            raise ProtocolError(ErrorCode.MAX_LENGTH, f"session max length {session.max_length} exceeded: "
                                                      f"positions {start}..{start + n - 1}")
        started = time.perf_counter()
        done = await self.compute(self._computed, partial(session.stack, cache=session.cache, start=start), hidden,
                                  reply_dtype)
        session.record_step(n * session.batch, done.input_digest, done.output_digest)
        self.stats.step(n * session.batch, time.perf_counter() - started)
        reply = {"type": "result", "step": step, "hidden": done.hidden}
        if attesting:
            reply["attestation"] = self._attest(session.session_id, step, start, session.stack, done.input_digest,
                                                done.output_digest)
        return reply

    def _close(self, session: NodeSession, receipt: Any) -> None:
        if self.sessions.pop(session.key, None) is None:
            return
        session.free()
        duration = (time.time_ns() - session.opened_ns) / 1e9
        log.info("session close  %s client=%s blocks=%d:%d tokens=%d steps=%d duration=%.1fs receipt=%s",
                 session.session_id, session.client[-8:], session.stack.start, session.stack.end, session.tokens,
                 session.steps, duration, "yes" if receipt else "no",
                 extra={"event": "session_close", "session": session.session_id, "client": session.client,
                        "blocks": [session.stack.start, session.stack.end], "tokens": session.tokens,
                        "steps": session.steps, "duration_s": round(duration, 3), "receipted": bool(receipt)})
        self.on_session_end(session, receipt if isinstance(receipt, bytes) else None)

    async def guard(self, serve: Callable[[], Any], writer: asyncio.StreamWriter, info: StreamInfo,
                    timed_as: str | None = None) -> None:
        """Turn validation failures into error frames; a vanished client is not an error.

        `timed_as` records the whole request's duration under that handler label.
        """
        started = time.perf_counter()
        try:
            await serve()
            if timed_as:
                self.stats.metrics.rpc(timed_as, time.perf_counter() - started)
        except ProtocolError as e:
            self.stats.error(e.code)
            log.debug("rejected frame from %s: [%s] %s", info.peer_id, e.code.value, e)
            await _try_write(writer, wire.error_frame(e.code, str(e)))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.debug("stream from %s ended", info.peer_id)
        except Exception as e:  # a bug of ours: report it to the client, keep serving others
            self.stats.error(ErrorCode.INTERNAL)
            log.exception("internal error serving %s", info.peer_id)
            await _try_write(writer, wire.error_frame(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}"))
        finally:
            writer.close()


async def _try_write(writer: asyncio.StreamWriter, frame: dict[str, Any]) -> None:
    try:
        await wire.write_frame(writer, frame)
    except (ConnectionError, RuntimeError):
        pass


def _version() -> str:
    try:
        return importlib.metadata.version("swarmlm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
