"""Requests waiting for a worker, served to their clients in turn rather than first come, first served.

One client that queues 100 requests must not make another's single request wait behind all of
them: each client has its own FIFO and the clients take turns (round-robin). The queue is bounded;
when it is full, a newcomer holding fewer waiting requests than the largest holder pushes out that
holder's newest one, so a client that fills the queue cannot lock the others out (max-min fair).
Pure data structure, no clock, no I/O: the worker pool decides what to run and whom to refuse.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")
Client = Hashable


class FairQueue(Generic[T]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._waiting: OrderedDict[Client, deque[T]] = OrderedDict()  # clients in the order of their next turn
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def clients(self) -> list[Client]:
        """Those with requests waiting, in the order of their next turn."""
        return list(self._waiting)

    def waiting(self, client: Client) -> int:
        return len(self._waiting.get(client, ()))

    def push(self, client: Client, item: T) -> T | None:
        """Queue `item`; returns what must be refused instead: None, `item` itself (the queue is full and
        this client holds as many as anyone), or the newest item of the largest holder, pushed out."""
        pushed_out: T | None = None
        if self._size >= self.capacity:
            largest = max(self._waiting, key=lambda c: len(self._waiting[c]), default=None)
            if largest is None or self.waiting(client) + 1 >= len(self._waiting[largest]):
                return item
            pushed_out = self._waiting[largest].pop()
            self._size -= 1
            if not self._waiting[largest]:
                del self._waiting[largest]
        self._waiting.setdefault(client, deque()).append(item)
        self._size += 1
        return pushed_out

    def pop(self, eligible: Callable[[Client], bool] = lambda _: True) -> tuple[Client, T] | None:
        """The oldest item of the first eligible client in turn; that client then goes to the back."""
        for client in self._waiting:
            if eligible(client):
                break
        else:
            return None
        items = self._waiting.pop(client)
        item = items.popleft()
        self._size -= 1
        if items:
            self._waiting[client] = items  # re-inserted last: its next turn comes after everyone else's
        return client, item

    def remove(self, client: Client, item: T) -> bool:
        """Take back an item that no longer wants a worker (its client left); False if it was not waiting."""
        items = self._waiting.get(client)
        if items is None or item not in items:
            return False
        items.remove(item)
        self._size -= 1
        if not items:
            del self._waiting[client]
        return True
