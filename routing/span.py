"""One node's part of a client's chain: an inference session over blocks [hop.start, hop.end).

Frames to the node are sent without waiting (an `open` and the first `step` leave together, so
opening costs no round trip of its own); a reader task takes every frame the node sends back
into a queue — `opened`, step results (relayed replies, or copies of pushed outputs), `closed`,
errors — and `push_failed` notices (the node could not push to its successor) and `routed`
acknowledgements into queues of their own: a re-route answered while a result copy is still
unread must not take that result's place. Each result is checked: shape, finite values, and the node's signed attestation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

import torch

from ledger.keys import Identity

from . import protocol, wire
from .attestation import Attestation, check_step_attestation, parse_attestation
from .client import PeerLink
from .errors import PeerFailure, PeerSilent, RemoteError, RoutingError
from .grants import grant, ticket
from .planner import Hop
from .tasks import background

log = logging.getLogger(__name__)
F = TypeVar("F", bound=protocol.Frame)
MAX_UNREAD_FRAMES = 8  # frames of one session a node may have sent ahead of what we read
ROUTE_TIMEOUT = 10.0  # seconds for a node to acknowledge new push neighbours (an error frame waits for the next step)


class SpanSession:
    def __init__(self, link: PeerLink, hop: Hop, root: str, session_id: str, max_length: int,
                 reply_dtype: torch.dtype, *, identity: Identity, attest: bool = True,
                 prev: str | None = None, next_hop: Hop | None = None) -> None:
        self.link, self.hop, self.root, self.identity = link, hop, root, identity
        self.session_id, self.max_length, self.reply_dtype = session_id, max_length, reply_dtype
        self.attest = attest
        self.prev, self.next_hop = prev, next_hop  # push neighbours (None: the client)
        self.attestations: list[Attestation] = []
        self.send_dtype = wire.WIRE_DTYPES.get(hop.record.dtype, torch.float32)
        self.tokens = 0  # computed, as the node counts them
        self.rolled_back = 0  # computed, then discarded by a step or close that rewound over them
        self.steps = 0
        self.length = 0  # positions the node holds for us
        self._kept_from = 0  # our length before `keep` cut it: the node holds those until it reads the close
        self._batch = 1
        self._width = 0  # the hidden size of the results awaited (0: none yet)
        self._outputs = hashlib.sha256()
        self._writer: asyncio.StreamWriter | None = None
        # Bounded: a node cannot make us hold more than a few of its frames (each up to 64 MiB) unread.
        self._frames: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue(MAX_UNREAD_FRAMES)
        self.notices: asyncio.Queue[protocol.PushFailed] = asyncio.Queue(MAX_UNREAD_FRAMES)
        self._routed: asyncio.Queue[protocol.Routed] = asyncio.Queue(MAX_UNREAD_FRAMES)
        self._stale: list[dict[str, Any]] = []  # results dropped at a re-route, still to be counted
        self._reading: asyncio.Task | None = None
        self._opened = False
        self.last_result: protocol.Result | None = None  # the frame of the latest result used
        self.closed: protocol.Closed | None = None  # the node's count at the close (tokens, accepted)
        self.timing = {"wait": 0.0, "check": 0.0, "node": 0.0}  # seconds: blocked on replies, checking them,
        # and what the node reported computing (queue wait included) — for first-token breakdowns

    @property
    def peer(self) -> str:
        return self.hop.peer_id

    @property
    def weights_root(self) -> str:
        """The root of the weights this node computes with (a quantized store's own, else the model's)."""
        return self.hop.record.served_root or self.root

    def _grant(self) -> tuple[dict[str, Any], list[str]]:
        """The signed push grant for the current neighbours, and where the successor listens."""
        nxt = self.next_hop.peer_id if self.next_hop else None
        signed = grant(self.identity, session=self.session_id, node=self.peer, prev=self.prev, next=nxt,
                       root=self.root, blocks=(self.hop.start, self.hop.end)).to_wire()
        return signed, list(self.next_hop.record.maddrs[:protocol.MAX_NEXT_MADDRS]) if self.next_hop else []

    async def open(self) -> None:
        """Send the open frame; its reply is read with the first result (`opened` is checked then)."""
        reader, self._writer = await self.link.open_stream(self.peer, protocol.INFERENCE)
        self._reading = background(self._read(reader), "a span's reader")
        signed, maddrs = self._grant()
        await self._send(protocol.Open(self.root, self.session_id, self.max_length,
                                       blocks=(self.hop.start, self.hop.end),
                                       reply_dtype=wire.dtype_name(self.reply_dtype), attest=self.attest,
                                       grant=signed, next_maddrs=maddrs, tickets=True))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await wire.read_frame(reader)
                side: asyncio.Queue[Any]
                if frame["type"] == protocol.PushFailed.TYPE:
                    side, notice = self.notices, protocol.PushFailed.parse(frame)
                elif frame["type"] == protocol.Routed.TYPE:
                    side, notice = self._routed, protocol.Routed.parse(frame)
                    self._drop_results()
                else:
                    await self._frames.put(frame)  # waits while we have not read earlier ones: backpressure
                    continue
                if side.full():  # one nobody waited for is stale: the oldest goes
                    side.get_nowait()
                side.put_nowait(notice)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            await self._frames.put(PeerFailure(self.peer, f"stream closed ({type(e).__name__})"))
        except RoutingError as e:
            await self._frames.put(PeerFailure(self.peer, f"sent an invalid frame: {e}"))

    async def expect(self, kind: type[F], timeout: float | None = None, *, after_results: bool = False) -> F:
        """The node's next frame, which must be `kind`; errors become RemoteError, silence PeerFailure.
        With `after_results`, results before it are set aside, for `settle` to count."""
        if kind is not protocol.Opened and not self._opened:
            await self.expect(protocol.Opened, timeout)
        timeout = timeout or self.link.request_timeout
        try:
            frame = await asyncio.wait_for(self._frames.get(), timeout)
            while after_results and isinstance(frame, dict) and frame.get("type") == protocol.Result.TYPE \
                    and len(self._stale) < MAX_UNREAD_FRAMES:
                self._stale.append(frame)
                frame = await asyncio.wait_for(self._frames.get(), timeout)
        except asyncio.TimeoutError:
            raise PeerSilent(self.peer, f"no reply within {timeout:.0f}s") from None
        if isinstance(frame, BaseException):
            self._frames.put_nowait(frame)  # the stream stays broken for whoever asks next
            raise frame
        protocol.check_reply(self.peer, frame, kind.TYPE)
        try:
            parsed = kind.read(frame)
        except RoutingError as e:
            raise PeerFailure(self.peer, f"sent an invalid frame: {e}") from None
        if kind is protocol.Opened:
            self._opened = True
        return parsed

    async def send_step(self, hidden: torch.Tensor, start: int, push: bool = False,
                        before: Callable[[], Awaitable[None]] | None = None) -> torch.Tensor:
        """Send a step (pushed: the node forwards its output along the chain); returns what was sent.
        `before` is awaited once the step's ticket is signed, before the step goes out.

        Every step carries a ticket: each node along the chain computes a pushed step once, as far as
        its ticket says, and a relayed step's ticket, spent too, orders it after every push it follows,
        so a push that arrives late (its pusher died or was re-routed) cannot rewind what came after."""
        sent = hidden.to(self.send_dtype)
        signed = ticket(self.identity, session=self.session_id, start=start, tokens=sent.shape[1],
                        batch=sent.shape[0]).to_wire()
        if before is not None:
            await before()
        await self._send(protocol.Step(self.session_id, start, wire.encode_tensor(sent), push, signed))
        return sent

    async def result(self, sent: torch.Tensor, start: int, timeout: float | None = None, ring: int | None = None
                     ) -> tuple[torch.Tensor, protocol.Result]:
        """This span's next step result for input `sent` at `start`, checked; and its frame.

        Results of ring steps under a ring other than `ring` (its ticket's seq) are stale, and so are
        results of another step: a step both pushed and relayed (its pusher died after the push left)
        is computed twice, and the second result must not stand for our next step. Stale results are
        counted, not used; a node sending more than a few of them in a row is failed over."""
        self._width = sent.shape[-1]
        began = time.perf_counter()
        frame = await self._next_result(timeout)
        stale = 0
        while (frame.start, frame.ring) != (start, ring):
            if frame.start is None:
                raise PeerFailure(self.peer, "sent a step result without its start position")
            log.info("%s: passed over a result for position %d (awaiting %d)", self.peer[-8:], frame.start, start)
            self._count_unused(frame)
            stale += 1
            if stale == MAX_UNREAD_FRAMES:
                raise PeerFailure(self.peer, f"sent {stale} results in a row for steps we did not await")
            frame = await self._next_result(timeout)
        received = time.perf_counter()
        self.timing["wait"] += received - began
        if frame.compute_ms is not None:
            self.timing["node"] += frame.compute_ms / 1000
        try:
            out = wire.decode_tensor(frame.hidden, hidden_size=sent.shape[-1], max_tokens=sent.shape[1],
                                     max_batch=sent.shape[0], finite=True)
        except RoutingError as e:
            raise PeerFailure(self.peer, f"returned a malformed tensor: {e}") from None
        if out.shape != sent.shape:
            raise PeerFailure(self.peer, f"returned shape {list(out.shape)} for input {list(sent.shape)}")
        if out.dtype != self.reply_dtype:  # a coarser dtype would also widen its spot check's bound
            raise PeerFailure(self.peer, f"replied in {wire.dtype_name(out.dtype)}, asked for "
                                         f"{wire.dtype_name(self.reply_dtype)}")
        if self.attest:
            self.attestations.append(check_step_attestation(
                parse_attestation(frame.attestation), peer=self.peer, session=self.session_id, step=self.steps,
                start=start, root=self.weights_root, blocks=(self.hop.start, self.hop.end),
                dtype=self.hop.record.dtype, sent=sent, received=out, scheme=self.hop.record.scheme or None))
        self._count(start, out)
        self.last_result = frame
        self.timing["check"] += time.perf_counter() - received
        return out, frame

    async def _next_result(self, timeout: float | None) -> protocol.Result:
        """The next result frame; results set aside before it (at a re-route that arrived while we
        waited) are counted first, as the node computed them first: its step numbers include them."""
        frame = await self.expect(protocol.Result, timeout)
        self.settle()
        return frame

    def _count(self, start: int, out: torch.Tensor) -> None:
        """Count a step the node computed, as it counts it for its receipt and its step numbers. A result
        past the positions we hold (a ring's stale step read at the close) follows positions that `keep`
        let go of here but the node still held when it computed it: they are held again, so that the
        close's rewind counts each once, as the node does."""
        self.steps += 1
        if self.length < start <= self._kept_from:
            self.rolled_back -= (start - self.length) * self._batch
            self.length = start
        self._rewind(start)
        self._batch = out.shape[0]
        self.tokens += out.shape[0] * out.shape[1]
        self.length = start + out.shape[1]
        self._outputs.update(wire.tensor_digest(out))

    def settle(self) -> None:
        """Count the results set aside unused (dropped at a re-route, or read at the close): the node
        computed them (an old neighbour's push, a stale ring step), so its step numbers and receipt
        include them. Unused, they are only parsed within bounds; one that cannot be parsed still
        moves the step number (the receipt may then not match, and that node logs its session
        unreceipted: nobody is blamed)."""
        while self._stale:
            try:
                result = protocol.Result.read(self._stale.pop(0))
            except RoutingError as e:
                log.info("could not count a stale result of %s (%s)", self.peer[-8:], e)
                self.steps += 1
                continue
            self._count_unused(result)

    def _count_unused(self, result: protocol.Result) -> None:
        """Count a result the node computed that we do not use (see `settle`)."""
        try:
            start = result.start
            if start is None or start >= self.max_length:
                raise RoutingError(f"result start {start!r:.20} is not a position")
            out = wire.decode_tensor(result.hidden, hidden_size=self._width,
                                     max_tokens=self.max_length - start, max_batch=self._batch)
        except RoutingError as e:
            log.info("could not count a stale result of %s (%s)", self.peer[-8:], e)
            self.steps += 1
            return
        self._count(start, out)

    async def step(self, hidden: torch.Tensor, start: int, timeout: float | None = None) -> torch.Tensor:
        """A relayed step: send, and wait for this node's result (`timeout`: the request timeout if None)."""
        sent = await self.send_step(hidden, start)
        return (await self.result(sent, start, timeout))[0]

    async def ended(self) -> None:
        """Wait until the node's stream ends (its process died, say)."""
        if self._reading is not None:
            await asyncio.wait({self._reading})

    async def arm(self, ring: protocol.Ring) -> None:
        """Ask this node (serving the last block) to close a ring (node/ring.py)."""
        await self._send(ring)

    async def route(self, prev: str | None, next_hop: Hop | None) -> None:
        """New push neighbours after a failover; waits until the node has them."""
        self.prev, self.next_hop = prev, next_hop
        signed, maddrs = self._grant()
        await self._send(protocol.Route(self.session_id, signed, maddrs))
        try:
            await asyncio.wait_for(self._routed.get(), ROUTE_TIMEOUT)
        except asyncio.TimeoutError:
            raise PeerFailure(self.peer, f"did not take its new push neighbours within {ROUTE_TIMEOUT:.0f}s") from None

    def _drop_results(self) -> None:
        """Results still unread when the node takes new neighbours answer pushes from the old ones (a
        node that failed or lied mid-step): the node sends them before "routed", and the client
        relays that step again, so reading one later would pair it with the wrong step. They are
        set aside to be counted, not used (`settle`)."""
        stale = self._set_aside_results()
        if stale:
            log.info("dropped %d result(s) of %s from before its re-route", stale, self.peer[-8:])

    def _set_aside_results(self) -> int:
        """Move the unread results out of the frame queue, to be counted by `settle`; how many."""
        queue = self._frames._queue  # type: ignore[attr-defined]
        stale = [f for f in queue if isinstance(f, dict) and f.get("type") == protocol.Result.TYPE]
        for frame in stale:
            queue.remove(frame)
        self._stale.extend(stale)
        del self._stale[MAX_UNREAD_FRAMES:]  # unsolicited "routed" frames must not make us hold more
        return len(stale)

    def drop_notices(self) -> None:
        while not self.notices.empty():
            self.notices.get_nowait()

    def _rewind(self, length: int) -> None:
        if length < self.length:
            self.rolled_back += (self.length - length) * self._batch
            self.length = length

    @property
    def accepted(self) -> int:
        """Tokens computed and kept (the node counts the same way for its ledger)."""
        return self.tokens - self.rolled_back

    def keep(self, length: int | None) -> None:
        """The caller keeps only `length` positions: what the close frame tells the node. Results
        already read but unused (say, a ring step started before a re-route) are counted first, so
        that the receipt signs what the node computed."""
        self._set_aside_results()
        self.settle()
        if length is not None:
            self._kept_from = max(self._kept_from, self.length)
            self._rewind(length)

    @property
    def outputs_digest(self) -> bytes:
        return self._outputs.copy().digest()

    async def close(self, receipt: bytes | None = None) -> None:
        """Send close (with the signed receipt and the positions kept) and wait briefly for the acknowledgement."""
        if self._writer is None:
            return
        kept = self.length
        try:
            await self._send(protocol.Close(self.session_id, receipt, kept))
            # results the node sent before it read the close (a ring's stale step): its count includes them
            self.closed = await self.expect(protocol.Closed, timeout=5, after_results=True)
            self.settle()
            self._rewind(kept)
        except (RoutingError, ConnectionError) as e:  # the node logs the session unreceipted
            log.info("closing the session on %s: %s", self.peer[-8:], e)
        finally:
            self.abort()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reading is not None:
            self._reading.cancel()

    async def _send(self, frame: protocol.Frame) -> None:
        if self._writer is None:
            raise PeerFailure(self.peer, "the session's stream is closed")
        try:
            await wire.write_frame(self._writer, frame.to_wire())
        except (ConnectionError, RuntimeError) as e:
            if self._reading is not None:  # let the reader take in whatever the node said before closing
                await asyncio.wait({self._reading}, timeout=1.0)
            told = self._told()
            raise told or PeerFailure(self.peer, f"stream broken while sending ({type(e).__name__})") from None

    def _told(self) -> RemoteError | None:
        """The error the node sent before closing the stream (say, its session expired), if any."""
        for frame in list(self._frames._queue):  # type: ignore[attr-defined]
            if isinstance(frame, dict) and frame.get("type") == protocol.Error.TYPE:
                return protocol.Error.lenient(frame).remote(self.peer)
        return None
