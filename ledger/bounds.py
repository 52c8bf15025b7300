"""Limits on untrusted decoded values, checked with an explicit stack before anything walks them.

msgpack decodes a 1 KB document into lists nested 1000 deep without complaint; any recursive code
that runs next (re-encoding, repr, pickling to the DHT process) then dies with RecursionError.
`check` refuses such a value, as EncodingError, before that code runs: too deep, too many items,
too much text in all, a string too long, or a type no decoder should produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.errors import EncodingError

_SCALARS = (type(None), bool, int, float)
_STRINGS = (str, bytes)
_SEQUENCES = (list, tuple)


@dataclass(frozen=True)
class Bounds:
    """How big an untrusted value may be."""

    depth: int = 32  # containers nested in containers; a scalar has depth 0
    items: int = 100_000  # list elements and map entries, all containers together
    size: int = 1 << 20  # characters and bytes, all strings together
    string: int = 1 << 20  # characters or bytes of the longest single string


def check(value: Any, bounds: Bounds, what: str = "value") -> None:
    """Raise EncodingError unless `value` (and every key and item in it) is within `bounds`."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    items = size = 0
    while stack:
        v, depth = stack.pop()
        kind = type(v)
        if kind in _STRINGS:
            if len(v) > bounds.string:
                raise EncodingError(f"{what} holds a string of {len(v)} > {bounds.string}")
            size += len(v)
            if size > bounds.size:
                raise EncodingError(f"{what} holds more than {bounds.size} characters and bytes in all")
        elif kind in _SEQUENCES or kind is dict:
            if depth >= bounds.depth:
                raise EncodingError(f"{what} is nested deeper than {bounds.depth} levels")
            items += len(v)
            if items > bounds.items:
                raise EncodingError(f"{what} holds more than {bounds.items} items")
            children = v if kind is not dict else [x for pair in v.items() for x in pair]
            stack.extend((child, depth + 1) for child in children)
        elif kind not in _SCALARS:
            raise EncodingError(f"{what} holds a {kind.__name__}, which no decoder of ours produces")
