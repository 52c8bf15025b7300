"""Canonical msgpack: one byte string per value, so signatures and leaf hashes agree everywhere.

Allowed values: None, bool, int (64-bit), str, bytes, lists and maps with str keys, nested at
most MAX_DEPTH deep. Maps are written with keys sorted; floats, extension types and tuples are
refused. Decoding is strict: the bytes must decode, stay within the depth and size bounds
(checked without recursion, before anything recurses), contain no duplicate keys or trailing
data, and re-encode to themselves.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ledger import bounds
from ledger.errors import EncodingError

MAX_SIZE = 1 << 20
MAX_DEPTH = 32


def _sorted(value: Any, depth: int = 0) -> Any:
    if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
        raise EncodingError(f"canonical values nest at most {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise EncodingError("canonical maps have str keys only")
        return {k: _sorted(value[k], depth + 1) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return value
    raise EncodingError(f"{type(value).__name__} has no canonical encoding (use int, str, bytes, list, dict)")


def pack(value: Any) -> bytes:
    """The canonical encoding of `value`."""
    try:
        return msgpack.packb(_sorted(value), use_bin_type=True, strict_types=True)
    except (OverflowError, TypeError, ValueError) as e:
        raise EncodingError(f"cannot encode canonically: {e}") from None


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise EncodingError("duplicate map key")
    return result


def _no_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"msgpack extension type {code} is not allowed")


def unpack(data: bytes, max_size: int = MAX_SIZE) -> Any:
    """Decode canonical bytes; EncodingError for anything that is not exactly `pack`'s output.

    `max_size` guards against huge inputs; documents carrying tensors (evidence) pass a larger one.
    """
    if type(data) is not bytes:
        raise EncodingError(f"canonical msgpack is bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise EncodingError(f"{len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        value = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, object_pairs_hook=_unique_keys, ext_hook=_no_ext
        )
    except EncodingError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise EncodingError(f"not valid msgpack: {e}") from None
    bounds.check(value, bounds.Bounds(MAX_DEPTH, max_size, max_size, max_size), "a canonical document")
    if pack(value) != data:
        raise EncodingError("msgpack is not in canonical form (key order, integer width or floats)")
    return value
