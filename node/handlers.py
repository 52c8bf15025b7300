"""The node's one-shot RPCs: `swarmlm.info` (who am I, how loaded), `swarmlm.forward` (stateless) and
`swarmlm.dialback` (can the asker be reached: routing/reachability.py).

Handlers run on the event loop and only parse, validate and reply; compute goes through the step
scheduler. Sessions live in node/inference.py, pushed hops in node/push.py.
"""

from __future__ import annotations

import asyncio

from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from routing import reachability, wire
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
            wire.check_opening(await wire.read_frame(reader, SMALL_REQUEST, idle_timeout=FIRST_FRAME_TIMEOUT), "info")
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
            frame = await wire.read_frame(reader, s.max_frame, idle_timeout=FIRST_FRAME_TIMEOUT, budget=s.read_budget)
            wire.check_opening(frame, "forward")
            span = s.span(frame)
            hidden = s.decode_hidden(frame, s.config.max_batch)
            reply_dtype = s.reply_dtype(frame)
            last = frame.get("last", hidden.shape[1])  # spot checks want only the final positions back
            if type(last) is not int or not 1 <= last <= hidden.shape[1]:
                raise ProtocolError(ErrorCode.BAD_FRAME, f"'last' must be 1..{hidden.shape[1]}, got {last!r:.20}")
            done = await until_gone(reader, s.forward(peer_of(info), span, hidden, reply_dtype, last))
            reply = {"type": "result", "hidden": done.hidden}
            if frame.get("attest", True) is not False:
                reply["attestation"] = s.attestation(FORWARD_SESSION, 0, 0, span, done)
            await wire.write_frame(writer, reply)

        await guard(s.book, s.metrics, serve, reader, writer, info)
