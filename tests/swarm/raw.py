"""Speaking the wire protocol by hand, as a test (or an attacker) would: one session on one node."""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from routing import wire
from routing.client import PeerLink

HIDDEN = 576


class RawSession:
    """An inference session driven frame by frame; every reply is returned as the node sent it."""

    def __init__(self, link: PeerLink, peer: str, root: str, session: str, max_length: int, **open_fields: Any
                 ) -> None:
        self.link, self.peer, self.root, self.session = link, peer, root, session
        self.max_length, self.open_fields = max_length, open_fields
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> dict[str, Any]:
        self.reader, self.writer = await self.link.open_stream(self.peer, "swarmlm.inference")
        return await self.send({"type": "open", "v": wire.PROTOCOL_VERSION, "root": self.root,
                                "session": self.session, "max_length": self.max_length, **self.open_fields})

    async def step(self, start: int, n: int, hidden: torch.Tensor | None = None) -> dict[str, Any]:
        hidden = torch.randn(1, n, HIDDEN) if hidden is None else hidden
        return await self.send({"type": "step", "session": self.session, "step": 0, "start": start,
                                "hidden": wire.encode_tensor(hidden)})

    async def close(self) -> dict[str, Any]:
        try:
            return await self.send({"type": "close", "session": self.session})
        finally:
            self.abort()

    async def send(self, frame: dict[str, Any]) -> dict[str, Any]:
        assert self.writer is not None and self.reader is not None
        await wire.write_frame(self.writer, frame)
        return await self.read()

    async def read(self, timeout: float = 60) -> dict[str, Any]:
        assert self.reader is not None
        return await asyncio.wait_for(wire.read_frame(self.reader), timeout)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()


def output(frame: dict[str, Any], n: int) -> torch.Tensor:
    return wire.decode_tensor(frame["hidden"], hidden_size=HIDDEN, max_tokens=n, max_batch=1)


async def info(link: PeerLink, peer: str) -> dict[str, Any]:
    return (await link.ping(peer))[1].raw
