"""The client's own part of a model, its head and tokenizer, loaded once per process.

A process that connects to one model many times (a gateway that reconnects, a benchmark, the test
suite's clients) read, hashed and laid out the head shard (113 MB for the default model) and parsed
the tokenizer again on every connect: 0.7 CPU-s each (cProfile: tokenizer 0.35, head 0.33). Both
are read-only once loaded, and the concurrent sessions of one `RemoteModel` already share them, so
connections to the same store share them too. The key holds the store's root and the head file's
size and modification time: a store packed again in place loads afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from shards.head import Head
from shards.manifest import store_file
from shards.store import ShardStore

KEPT = 2  # stores whose parts one process keeps (a model and, say, its quantized twin)

_parts: OrderedDict[tuple, tuple[Head, Any]] = OrderedDict()
_lock = threading.Lock()


def head_and_tokenizer(store: ShardStore, device: str) -> tuple[Head, Any]:
    """The store's head on `device` and its tokenizer (None when the store has none)."""
    head_file = store_file(store.path, store.manifest.head.file, "head").stat()
    key = (str(store.path.resolve()), store.root, device, head_file.st_size, head_file.st_mtime_ns)
    with _lock:  # one load per key, even when threads connect at once
        if key not in _parts:
            _parts[key] = (store.load_head(device), store.tokenizer() if store.manifest.tokenizer else None)
            while len(_parts) > KEPT:
                _parts.popitem(last=False)
        _parts.move_to_end(key)
        return _parts[key]
