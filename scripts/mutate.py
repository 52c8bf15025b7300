"""Structure-aware mutations of valid documents, tensors and frames: what the fuzzer (fuzz.py) sends.

A mutation keeps most of a valid value and breaks one place the way an attacker would: a wrong
type, a bool for an int, a huge, negative, fractional or non-finite number, nesting up to and past
the decoder's limit, an oversized string or list, a missing or unknown key, a tensor whose dtype,
shape and bytes disagree or whose values are NaN; or, at the byte level, a frame cut short, a
flipped byte, a lying length prefix, random bytes. Everything is drawn from the `random.Random`
given, so a seed replays a case exactly.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing import wire  # noqa: E402
from tests.hostile.attacker import Deep, frame, header  # noqa: E402

LEAVES = [None, True, False, 0, 1, -1, 2, 63, 64, 1 << 31, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -(1 << 63), 0.5,
          -0.0, 1e308, math.nan, math.inf, -math.inf, "", "x", "\x00\n\u202e", b"", b"\x00\x01\x02", [], {}]
TENSOR_KEYS = {"dtype", "shape", "data"}
Path_ = tuple[Any, ...]


class Mutator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def hostile(self) -> Any:
        """A value no schema of ours accepts in most places."""
        r, pick = self.rng.random(), self.rng.choice
        if r < 0.55:
            return pick(LEAVES)
        if r < 0.63:
            return "s" * pick([65, 257, 5000, 100_000])
        if r < 0.70:
            return self.rng.randbytes(pick([1, 33, 65, 5000]))
        if r < 0.77:
            return [None] * pick([17, 1000, 100_001])  # the last: past the frame bounds' item count
        if r < 0.82:
            return {f"k{i}": i for i in range(pick([9, 300]))}
        return Deep(pick([4, 9, 100, 1000, 1024, 1025, 5000]))  # msgpack decodes up to 1024

    def near(self, v: Any) -> Any:
        """A neighbour of a valid value: the same type just out of range, or a type easily confused with it."""
        x = self._near(v)
        return min(max(x, -(1 << 63)), (1 << 64) - 1) if type(x) is int else x  # what msgpack can hold

    def _near(self, v: Any) -> Any:
        pick = self.rng.choice
        if isinstance(v, bool):
            return pick([int(v), str(v).lower(), None, 1.0])
        if isinstance(v, int):
            return pick([v - 1, v + 1, -v - 1, v << 32, float(v), v + 0.5, v != 0, str(v), (1 << 64) - 1, -(1 << 63)])
        if isinstance(v, float):
            return pick([math.nan, math.inf, -math.inf, 0.0, -v, int(v) if math.isfinite(v) else 0, str(v)])
        if isinstance(v, str):
            return pick(["", v * 60, v[:-1], v.upper(), v + "\x00", v.encode(), v + "\u202e", 0])
        if isinstance(v, bytes):
            return pick([b"", v[:-1], v + b"\x00", v.hex(), bytes(len(v)), bytes(len(v) + 1)])
        if isinstance(v, list):
            return pick([v[:-1], v + v, v[::-1], [v], dict(enumerate(map(str, v))), []])
        if isinstance(v, dict):
            return pick([list(v.values()), {}, {**v, "": None}, [v]])
        return self.hostile()

    def tensor(self, t: dict[str, Any]) -> Any:
        """A tensor map whose dtype, shape and bytes disagree, or whose values are not finite."""
        pick = self.rng.choice
        shape, data = t["shape"], t["data"] if isinstance(t["data"], bytes) else b""
        kind = pick(["data", "dtype", "shape", "values", "keys"])
        if kind == "values" and not (type(shape) is list and len(shape) == 3
                                     and all(type(d) is int and 0 < d <= 1 << 12 for d in shape)):
            kind = "data"  # mutated before: no values to poison
        if kind == "data":
            return {**t, "data": pick([data[:-1], data[:-4], data + b"\x00" * 4, b"", data.hex(), None])}
        if kind == "dtype":
            return {**t, "dtype": pick(["float64", "int8", "bfloat16", "float16", "", "torch.float32", 5, None])}
        if kind == "shape" and type(shape) is list and len(shape) == 3:
            b, n, h = shape
            return {**t, "shape": pick([[b, n], [b, n, h, 1], [0, n, h], [-1, n, h], [b, n, h - 1], [True, n, h],
                                        [float(b), n, h], [1 << 63, 1, h], [b, 1 << 20, h], [b, n * 2, h], "x"])}
        if kind == "values":
            x = torch.randn(shape)
            x.view(-1)[self.rng.randrange(x.numel())] = pick([math.nan, math.inf, -math.inf])
            return wire.encode_tensor(x)
        return pick([{k: v for k, v in t.items() if k != pick(sorted(TENSOR_KEYS))}, {**t, "extra": 1},
                     [t["dtype"], t["shape"], t["data"]], data])

    def document(self, doc: Any, places: int | None = None) -> Any:
        """`doc` with one to three places replaced, deleted, or given an unknown sibling."""
        mutant = copy.deepcopy(doc)
        for _ in range(places or self.rng.choice([1, 1, 1, 2, 3])):
            paths = _paths(mutant)
            if not paths:
                return self.hostile()
            path = self.rng.choice(paths)
            parent = mutant
            for key in path[:-1]:
                parent = parent[key]
            here = parent[path[-1]]
            action = self.rng.choice(["hostile", "near", "near", "delete", "add"])
            if isinstance(here, dict) and set(here) == TENSOR_KEYS and self.rng.random() < 0.7:
                parent[path[-1]] = self.tensor(here)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif action == "add" and isinstance(parent, dict):
                parent[self.rng.choice(["extra", "type", "v", "", "x" * 300])] = self.hostile()
            else:
                parent[path[-1]] = self.hostile() if action == "hostile" else self.near(here)
        return mutant

    def bytes(self, data: bytes) -> bytes:
        """`data` cut short, with a byte flipped, with random bytes spliced in, or random bytes instead."""
        at = self.rng.randrange(len(data) + 1)
        kind = self.rng.choice(["cut", "flip", "splice", "random"])
        if kind == "cut":
            return data[:at]
        if kind == "flip" and at < len(data):
            return data[:at] + bytes([data[at] ^ self.rng.randrange(1, 256)]) + data[at + 1:]
        if kind == "splice":
            return data[:at] + self.rng.randbytes(self.rng.randrange(1, 9)) + data[at:]
        return self.rng.randbytes(self.rng.choice([0, 1, 40, 300]))

    def text(self, text: str) -> str:
        """`text` with one line replaced by hostile text, or a few characters spliced in anywhere."""
        lines = text.split("\n")
        if self.rng.random() < 0.5:
            lines[self.rng.randrange(len(lines))] = self.rng.choice(
                ["", "— ", "\u2014 a b c", "AAAA", "1" * 5000, "-1", "18446744073709551616", "\x00", "a\rb"])
            return "\n".join(lines)
        at = self.rng.randrange(len(text) + 1)
        return text[:at] + self.rng.choice(["\n", " ", "\u2014", "=", "\ufffd", "0"]) + text[at:]

    def frames(self, frames: list[Any]) -> tuple[list[bytes], bool]:
        """Frames as bytes, one of them corrupted at the byte level some of the time; and whether
        the sender must hang up (a frame promises bytes that never come)."""
        payloads = [frame(f) for f in frames]
        if self.rng.random() > 0.25:
            return payloads, False
        i = self.rng.randrange(len(payloads))
        data = payloads[i]
        kind = self.rng.choice(["cut", "flip", "random", "huge", "empty", "short"])
        if kind == "cut":
            return payloads[:i] + [data[:self.rng.randrange(1, len(data))]], True
        if kind == "flip":
            at = self.rng.randrange(4, len(data)) if len(data) > 4 else 0
            payloads[i] = data[:at] + bytes([data[at] ^ self.rng.randrange(1, 256)]) + data[at + 1:]
            return payloads, at < 4  # a flipped length prefix may promise bytes that never come
        if kind == "random":
            body = self.rng.randbytes(self.rng.choice([1, 16, 300]))
            payloads[i] = len(body).to_bytes(4, "big") + body
        elif kind == "huge":
            return payloads[:i] + [header(self.rng.choice([(64 << 20) + 1, 1 << 31, (1 << 32) - 1]))], False
        elif kind == "empty":
            payloads[i] = header(0)
        else:  # the length prefix says less than the body holds: the rest reads as the next frame's start
            payloads[i] = (len(data) - 5).to_bytes(4, "big") + data[4:]
            return payloads[:i + 1], True
        return payloads, False


def _paths(value: Any) -> list[Path_]:
    """Every place in a document (map keys, list indices), tensors' insides excluded, without recursion."""
    found: list[Path_] = []
    stack: list[tuple[Path_, Any]] = [((), value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, dict) and set(v) == TENSOR_KEYS and path:
            continue
        children = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for key, child in children:
            found.append((*path, key))
            stack.append(((*path, key), child))
    return found
