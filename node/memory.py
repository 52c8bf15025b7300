"""The node's KV-cache budget: a bounded pool of token slots shared by all sessions.

A session reserves `batch * max_length` slots when it opens; if they do not fit, it is refused
with `cache full` at once (the client tries another node) instead of failing mid-answer.
"""

from __future__ import annotations

import threading

from routing.errors import ErrorCode, ProtocolError


class CachePool:
    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    @property
    def free(self) -> int:
        return self.capacity - self._used

    def reserve(self, tokens: int) -> "Reservation":
        with self._lock:
            if tokens > self.capacity - self._used:
                raise ProtocolError(ErrorCode.CACHE_FULL,
                                    f"cache full: the session needs {tokens} token slots, {self.capacity - self._used} "
                                    f"of {self.capacity} are free; try another node or a shorter max_length")
            self._used += tokens
        return Reservation(self, tokens)

    def _release(self, tokens: int) -> None:
        with self._lock:
            self._used -= tokens


class Reservation:
    """Slots held by one session; `release` is idempotent so every exit path may call it."""

    def __init__(self, pool: CachePool, tokens: int) -> None:
        self._pool, self.tokens = pool, tokens

    def release(self) -> None:
        if self.tokens:
            self._pool._release(self.tokens)
            self.tokens = 0
