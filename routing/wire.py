"""The wire format: length-prefixed msgpack frames over hivemind P2P binary streams, and tensors in them.

A frame is a 4-byte big-endian length and a msgpack map with a string `type`, read within size,
depth and time bounds. Tensors travel as raw bytes with dtype and shape, never pickled. What each
frame holds is declared in routing/protocol.py; a bad frame raises `ProtocolError` with a typed
code, which the node turns into an error frame.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Mapping

import msgpack
import torch

from ledger import bounds
from ledger.bounds import Bounds
from ledger.errors import EncodingError

from .errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 << 20
WIRE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                       "float16": torch.float16}
# No honest frame nests deeper than 3 (a ledger reply's [[entry, signature]]); msgpack decodes 1024.
FRAME_BOUNDS = Bounds(depth=8, items=100_000, size=MAX_FRAME_BYTES, string=MAX_FRAME_BYTES)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def pack_frame(frame: Mapping[str, Any]) -> bytes:
    body = msgpack.packb(frame, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def unpack_frame(body: bytes) -> dict[str, Any]:
    try:
        frame = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises a zoo of types on garbage
        raise ProtocolError(ErrorCode.BAD_FRAME, f"not a msgpack frame: {type(e).__name__}") from None
    try:  # before any code walks it: a value nested 1000 deep breaks repr() in an error message
        bounds.check(frame, FRAME_BOUNDS, "the frame")
    except EncodingError as e:
        raise ProtocolError(ErrorCode.BAD_FRAME, str(e)) from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a frame must be a msgpack map with a string 'type'")
    return frame


FRAME_GRACE_S = 10.0  # a frame's body may take this long, plus time at MIN_BYTES_PER_S ...
MIN_BYTES_PER_S = 1 << 20  # ... so a peer trickling bytes (slowloris) is cut off, an honest link is not
SMALL_FRAME = 64 << 10  # bodies up to this size are read without asking the budget


class ReadBudget:
    """Frame bytes that all streams together may be reading at once.

    Each stream's frames are capped, but many streams (from as many identities as an attacker
    likes) could each hold a large half-sent frame; past this budget a reader waits its turn, and
    gives up with `busy` rather than let memory grow.
    """

    def __init__(self, total_bytes: int) -> None:
        self.total, self.used = total_bytes, 0
        self._freed = asyncio.Condition()

    async def acquire(self, n: int, timeout: float) -> None:
        async with self._freed:
            try:
                await asyncio.wait_for(self._freed.wait_for(lambda: self.used + n <= self.total), timeout)
            except asyncio.TimeoutError:
                raise ProtocolError(ErrorCode.BUSY, f"the node is reading {self.used} bytes of other frames; "
                                                    f"retry your {n}-byte frame later") from None
            self.used += n

    async def release(self, n: int) -> None:
        async with self._freed:
            self.used -= n
            self._freed.notify_all()


async def read_frame(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES, *,
                     idle_timeout: float | None = None, budget: ReadBudget | None = None) -> dict[str, Any]:
    """The next frame; `asyncio.IncompleteReadError` when the stream ends between frames.

    `idle_timeout` bounds the wait for a frame to begin; a begun frame must then arrive in full
    within FRAME_GRACE_S plus its size at MIN_BYTES_PER_S. Both raise ProtocolError(TIMEOUT).
    """
    header = await _within(reader.readexactly(4), idle_timeout, "no frame arrived")
    size = int.from_bytes(header, "big")
    if size > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    deadline = FRAME_GRACE_S + size / MIN_BYTES_PER_S
    if budget is None or size <= SMALL_FRAME:
        return unpack_frame(await _within(reader.readexactly(size), deadline, f"a {size}-byte frame was not sent"))
    await budget.acquire(size, deadline)
    try:
        body = await _within(reader.readexactly(size), deadline, f"a {size}-byte frame was not sent")
    finally:
        await budget.release(size)
    return unpack_frame(body)


async def _within(read: Any, timeout: float | None, what: str) -> Any:
    if timeout is None:
        return await read
    try:
        return await asyncio.wait_for(read, timeout)
    except asyncio.TimeoutError:
        raise ProtocolError(ErrorCode.TIMEOUT, f"{what} within {timeout:.0f}s") from None


async def write_frame(writer: asyncio.StreamWriter, frame: Mapping[str, Any]) -> None:
    if writer.is_closing():  # the peer reset it: uvloop would raise RuntimeError, which reads as a bug of ours
        raise ConnectionResetError("the stream is closed")
    writer.write(pack_frame(frame))
    await writer.drain()


def encode_tensor(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().contiguous().cpu()
    return {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "data": t.view(torch.uint8).numpy().tobytes()}


def decode_tensor(obj: Any, *, hidden_size: int, max_tokens: int, max_batch: int,
                  finite: bool = False) -> torch.Tensor:
    """A (batch, tokens, hidden_size) tensor, checked against the limits before any allocation.

    `finite` also refuses NaN and infinities (a pass over the data: for small replies, or on a
    compute thread).
    """
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise ProtocolError(ErrorCode.BAD_TENSOR, "a tensor is a map of exactly dtype, shape and data")
    dtype = WIRE_DTYPES.get(obj["dtype"]) if isinstance(obj["dtype"], str) else None
    if dtype is None:
        raise ProtocolError(ErrorCode.BAD_TENSOR, f"dtype {obj['dtype']!r:.40} is not one of {', '.join(WIRE_DTYPES)}")
    shape, data = obj["shape"], obj["data"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(d) is int and d > 0 for d in shape)):
        raise ProtocolError(ErrorCode.BAD_TENSOR,
                            f"shape must be [batch, tokens, hidden] positive ints, got {shape!r:.80}")
    batch, tokens, hidden = shape
    if hidden != hidden_size:
        raise ProtocolError(ErrorCode.BAD_TENSOR, f"hidden size {hidden} does not match the model's {hidden_size}")
    if batch > max_batch or tokens > max_tokens:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"shape {shape} exceeds the limits: batch <= {max_batch}, "
                                                 f"tokens per step <= {max_tokens}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    if not isinstance(data, bytes) or len(data) != batch * tokens * hidden * itemsize:
        raise ProtocolError(ErrorCode.BAD_TENSOR, f"data holds {len(data) if isinstance(data, bytes) else '?'} "
                                                  f"bytes, shape {shape} of {obj['dtype']} needs "
                                                  f"{batch * tokens * hidden * itemsize}")
    tensor = torch.frombuffer(bytearray(data), dtype=dtype).reshape(batch, tokens, hidden)
    if finite:
        check_finite(tensor)
    return tensor


def check_finite(t: torch.Tensor) -> None:
    """Hidden states are finite; NaN or infinity is never computed on, attested or relayed."""
    if not bool(torch.isfinite(t).all()):
        raise ProtocolError(ErrorCode.BAD_TENSOR, "the hidden states hold NaN or infinite values")


def tensor_digest(t: torch.Tensor) -> bytes:
    """SHA-256 over a tensor's dtype, shape and raw bytes: what attestations and receipts name."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{dtype_name(t.dtype)}:{list(t.shape)}:".encode())
    h.update(t.view(torch.uint8).numpy())  # the buffer itself: no copy of a large step
    return h.digest()
