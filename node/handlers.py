"""The node's one-shot RPCs: `swarmlm.info` (who am I, how loaded), `swarmlm.forward` (stateless) and
`swarmlm.dialback` (can the asker be reached: routing/reachability.py).

Handlers run on the event loop and only parse, validate and reply; compute goes through the step
scheduler. Sessions live in node/inference.py, pushed hops in node/push.py.
"""

from __future__ import annotations

import asyncio

from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from routing import protocol, reachability, wire
from routing.attestation import FORWARD_SESSION
from routing.errors import ErrorCode, ProtocolError

from .serving import Serving
from .streams import FIRST_FRAME_TIMEOUT, SMALL_REQUEST, guard, peer_of, until_gone


class Handlers:
    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    async def info(self, info: StreamInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.serving

        async def serve() -> None:
            protocol.opening(await wire.read_frame(reader, SMALL_REQUEST, idle_timeout=FIRST_FRAME_TIMEOUT),
                             protocol.Info)
            reply = await asyncio.get_running_loop().run_in_executor(None, s.info)  # it reads the ledger
            await wire.write_frame(writer, reply)

        await guard(s.book, s.metrics, serve, reader, writer, info, "info")

    async def dialback(self, info: StreamInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Within the asker's stream cap like any request: each one makes this node open connections."""
        s = self.serving
        await guard(s.book, s.metrics, lambda: reachability.answer(info, reader, writer), reader, writer, info)

    async def forward(self, info: StreamInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.serving

        async def serve() -> None:
            frame = protocol.opening(await wire.read_frame(reader, s.max_frame, idle_timeout=FIRST_FRAME_TIMEOUT,
                                                           budget=s.read_budget), protocol.Forward)
            span = s.span(frame.root, frame.blocks)
            hidden = s.decode_hidden(frame.hidden, s.config.max_batch)
            last = hidden.shape[1] if frame.last is None else frame.last  # spot checks want the final positions
            if last > hidden.shape[1]:
                raise ProtocolError(ErrorCode.BAD_FRAME, f"'last' must be 1..{hidden.shape[1]}, got {last}")
            done = await until_gone(reader, s.forward(peer_of(info), span, hidden, s.reply_dtype(frame.reply_dtype),
                                                      last))
            attestation = s.attestation(FORWARD_SESSION, 0, 0, span, done) if frame.attest else None
            await wire.write_frame(writer, protocol.Result(done.hidden, attestation=attestation).to_wire())

        await guard(s.book, s.metrics, serve, reader, writer, info)
