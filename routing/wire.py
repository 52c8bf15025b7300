"""The wire protocol: length-prefixed msgpack frames over hivemind P2P binary streams.

A frame is a 4-byte big-endian length and a msgpack map. Tensors travel as raw bytes with
dtype and shape, never pickled. Every frame is validated before use; a bad one raises
`ProtocolError` with a typed code, which the node turns into an error frame.

Handlers and their frames (`v` = PROTOCOL_VERSION in every opening frame):
  swarmlm.info       → {type: info, v}                          ← {type: info, root, start, end, ...}
  swarmlm.forward    → {type: forward, v, root, hidden}          ← {type: result, hidden}
  swarmlm.inference  → {type: open, v, root, session, max_length, batch}  ← {type: opened}
                     → {type: step, session, step, start, hidden}         ← {type: result, step, hidden}
                     → {type: close, session, receipt?}                   ← {type: closed}
  any                ← {type: error, code, message}
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Mapping

import msgpack
import torch

from .errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 << 20
WIRE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                       "float16": torch.float16}
HANDLERS = ("swarmlm.info", "swarmlm.forward", "swarmlm.inference")


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
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a frame must be a msgpack map with a string 'type'")
    return frame


async def read_frame(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """The next frame; `asyncio.IncompleteReadError` when the stream ends between frames."""
    header = await reader.readexactly(4)
    size = int.from_bytes(header, "big")
    if size > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    return unpack_frame(await reader.readexactly(size))


async def write_frame(writer: asyncio.StreamWriter, frame: Mapping[str, Any]) -> None:
    writer.write(pack_frame(frame))
    await writer.drain()


def error_frame(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code.value, "message": message}


def encode_tensor(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().contiguous().cpu()
    return {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "data": t.view(torch.uint8).numpy().tobytes()}


def decode_tensor(obj: Any, *, hidden_size: int, max_tokens: int, max_batch: int) -> torch.Tensor:
    """A (batch, tokens, hidden_size) tensor, checked against the limits before any allocation."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise ProtocolError(ErrorCode.BAD_TENSOR, "a tensor is a map of exactly dtype, shape and data")
    dtype = WIRE_DTYPES.get(obj["dtype"]) if isinstance(obj["dtype"], str) else None
    if dtype is None:
        raise ProtocolError(ErrorCode.BAD_TENSOR, f"dtype {obj['dtype']!r} is not one of {', '.join(WIRE_DTYPES)}")
    shape, data = obj["shape"], obj["data"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(d) is int and d > 0 for d in shape)):
        raise ProtocolError(ErrorCode.BAD_TENSOR, f"shape must be [batch, tokens, hidden] positive ints, got {shape!r}")
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
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(batch, tokens, hidden)


def field(frame: Mapping[str, Any], name: str, kind: type | tuple[type, ...], *, minimum: int | None = None) -> Any:
    """A required field of the given type (bool is not an int here)."""
    value = frame.get(name)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is None or not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"'{frame.get('type')}' frame needs field {name!r} of type "
                                                 f"{'/'.join(k.__name__ for k in kinds)}")
    if minimum is not None and value < minimum:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"field {name!r} must be >= {minimum}, got {value}")
    return value


def check_opening(frame: Mapping[str, Any], expected_type: str) -> None:
    """The first frame of every stream: right type, and a protocol version we speak."""
    version = frame.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.VERSION, f"protocol version {version!r} is not supported; "
                                               f"this node speaks {PROTOCOL_VERSION}")
    if frame["type"] != expected_type:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"expected a '{expected_type}' frame, got '{frame['type']}'")


def tensor_digest(t: torch.Tensor) -> bytes:
    """SHA-256 over a tensor's dtype, shape and raw bytes: what attestations and receipts name."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{dtype_name(t.dtype)}:{list(t.shape)}:".encode())
    h.update(t.view(torch.uint8).numpy())  # the buffer itself: no copy of a large step
    return h.digest()
