"""The `swarmlm.ledger` RPC, node side: anyone may read this node's log, its checkpoint and proofs.

Reads hit SQLite, so they run on a worker thread, never on the event loop. Every index and size
in a request is an int in 0..2^63-1 (what SQLite holds) and in order, or the answer is bad_frame.
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from ledger.errors import LedgerError
from ledger.store import Ledger
from routing import protocol, wire
from routing.errors import ErrorCode, ProtocolError

from .serving import Serving
from .streams import FIRST_FRAME_TIMEOUT, SMALL_REQUEST, guard


class LedgerService:
    def __init__(self, ledger: Ledger, serving: Serving) -> None:
        self.ledger, self.serving = ledger, serving

    async def handle(self, info: StreamInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def serve() -> None:
            frame = await wire.read_frame(reader, SMALL_REQUEST, idle_timeout=FIRST_FRAME_TIMEOUT)
            protocol.opening(frame, protocol.LedgerRequest)
            reply = await asyncio.get_running_loop().run_in_executor(None, self._answer, frame)
            await wire.write_frame(writer, protocol.LedgerReply(**reply).to_wire())

        await guard(self.serving.book, self.serving.metrics, serve, reader, writer, info, "ledger")

    def _answer(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """The reply's fields for a request (protocol.LedgerRequest's fields)."""
        request = protocol.LedgerRequest.read(frame)
        op = request.op
        try:
            if op == "checkpoint":
                size, note = self.ledger.latest_checkpoint()
                return {"size": size, "checkpoint": note}
            if op == "entries":
                start = request.bounded("start", 0)
                end = request.bounded("end", start + 1)
                if end - start > protocol.MAX_LEDGER_ENTRIES:
                    raise ProtocolError(ErrorCode.TOO_LARGE,
                                        f"at most {protocol.MAX_LEDGER_ENTRIES} entries per request")
                return {"entries": [[r.data, r.signature] for r in self.ledger.rows(start, end)]}
            if op == "consistency":
                size1 = request.bounded("size1", 1)
                size2 = request.bounded("size2", size1)
                return {"proof": self.ledger.consistency_proof(size1, size2)}
            if op == "inclusion":
                index = request.bounded("index", 0)
                size = request.bounded("size", index + 1)
                row = self.ledger.row(index)
                return {"proof": self.ledger.inclusion_proof(index, size), "entry": [row.data, row.signature]}
        except LedgerError as e:
            raise ProtocolError(ErrorCode.BAD_FRAME, str(e)) from None
        raise ProtocolError(ErrorCode.BAD_FRAME, f"unknown ledger op {op!r} (checkpoint, entries, consistency, "
                                                 "inclusion)")
