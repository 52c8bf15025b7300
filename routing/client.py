"""A client's link to the swarm: DHT and P2P on a background event loop, and one span's session.

The swarm is asyncio. `SwarmClient` owns a loop on a daemon thread and runs coroutines there, so
synchronous callers never manage a loop and I/O never waits on the caller; asynchronous callers
await them with `on_loop`, directly when they run on that same loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Coroutine, Iterable, Sequence, TypeVar

import uvloop
from hivemind.p2p import P2P, PeerID
from multiaddr import Multiaddr

from ledger.keys import Identity

from . import dht as dht_io
from . import protocol, wire
from .errors import ErrorCode, PeerFailure, PeerSilent, ProtocolError, RemoteError, RoutingError, StreamClosed
from .records import ServerRecord, SignedRecordValidator

log = logging.getLogger(__name__)
T = TypeVar("T")
REQUEST_ATTEMPTS = 2  # a one-shot request whose stream ends early is sent once more
DIAL_TIMEOUT = 5.0  # an address that does not answer in this long is dead (or announced by a liar)


class PeerLink:
    """Requests to peers over one P2P instance: streams, frames, timeouts, typed failures.

    Clients and nodes (witnessing their peers) share it.
    """

    def __init__(self, p2p: P2P, request_timeout: float = 60.0) -> None:
        self.p2p, self.request_timeout = p2p, request_timeout
        self._addresses: dict[str, list[str]] = {}
        self._dialed: set[str] = set()

    def learn(self, records: Iterable[ServerRecord]) -> None:
        """Remember where announced peers listen, so the first stream to each dials it directly."""
        for r in records:
            self.remember(r.peer_id, r.maddrs)

    def remember(self, peer: str, maddrs: Sequence[str]) -> None:
        if maddrs and list(maddrs) != self._addresses.get(peer):
            self._addresses[peer] = list(maddrs)
            self._dialed.discard(peer)

    async def _dial(self, peer: str) -> None:
        if peer not in self._dialed and peer in self._addresses:
            await self.connect(peer, self._addresses[peer])

    async def connect(self, peer: str, maddrs: Sequence[str]) -> bool:
        """Dial `peer` at `maddrs` (at once if already connected); whether a connection is open. p2pd would
        otherwise have to discover the address through libp2p's own DHT."""
        self.remember(peer, maddrs)
        try:
            await asyncio.wait_for(self.p2p._client.connect(
                PeerID.from_base58(peer), [Multiaddr(a) for a in maddrs]), DIAL_TIMEOUT)
        except Exception as e:
            log.debug("direct dial of %s failed (%s); leaving it to libp2p", peer[-8:], e)
            return False
        self._dialed.add(peer)
        return True

    async def open_stream(self, peer: str, handler: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self._dial(peer)
        try:
            _, reader, writer = await asyncio.wait_for(
                self.p2p.call_binary_stream_handler(PeerID.from_base58(peer), handler), self.request_timeout)
        except asyncio.TimeoutError:
            raise PeerSilent(peer, f"cannot open {handler} within {self.request_timeout:.0f}s") from None
        except Exception as e:
            raise PeerFailure(peer, f"cannot open {handler}: {type(e).__name__}: {e}") from None
        return reader, writer

    async def redial(self, peer: str) -> None:
        """Close our connections to a peer that went silent, so its next stream dials it afresh over
        every address it announces: what stalled may be the path (a relay that stopped forwarding with
        its connections open), and libp2p would otherwise reuse that connection for ever."""
        self._dialed.discard(peer)
        try:
            peer_id = PeerID.from_base58(peer)
            via = [str(a) for p in await asyncio.wait_for(self.p2p._client.list_peers(), DIAL_TIMEOUT)
                   if p.peer_id == peer_id for a in p.addrs]
            await asyncio.wait_for(self.p2p._client.disconnect(peer_id), DIAL_TIMEOUT)
        except Exception as e:
            log.info("could not drop our connections to %s (%s)", peer[-8:], e)
            return
        log.info("%s went silent: dropped our connections to it (%s); the next stream dials it afresh", peer[-8:],
                 ", ".join(via) or "none open")

    async def request(self, peer: str, handler: str, frame: dict[str, Any], timeout: float | None = None
                      ) -> dict[str, Any]:
        """One frame out, one frame back (info, forward, ledger, dialback), within `timeout` (default:
        the link's request timeout).

        These requests are idempotent, so a stream that ends before its reply (a reset on the way)
        is retried once on a fresh stream before the node counts as failed.
        """
        timeout = timeout or self.request_timeout
        for _ in range(REQUEST_ATTEMPTS - 1):
            try:
                return await self._request_once(peer, handler, frame, timeout)
            except StreamClosed as e:
                log.info("%s; retrying %s on a fresh stream", e, handler)
        return await self._request_once(peer, handler, frame, timeout)

    async def _request_once(self, peer: str, handler: str, frame: dict[str, Any], timeout: float
                            ) -> dict[str, Any]:
        reader, writer = await self.open_stream(peer, handler)
        try:
            try:
                await wire.write_frame(writer, frame)
            except ConnectionError as e:
                raise StreamClosed(peer, f"stream closed ({type(e).__name__})") from None
            return await self._reply(peer, reader, protocol.REPLY_TYPES[handler], timeout)
        finally:
            writer.close()

    async def _reply(self, peer: str, reader: asyncio.StreamReader, frame_type: str, timeout: float
                     ) -> dict[str, Any]:
        """The reply, which must be `frame_type`; errors become RemoteError, silence PeerFailure."""
        try:
            frame = await asyncio.wait_for(wire.read_frame(reader), timeout)
        except asyncio.TimeoutError:
            raise PeerSilent(peer, f"no reply within {timeout:.0f}s") from None
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise StreamClosed(peer, f"stream closed ({type(e).__name__})") from None
        except RoutingError as e:
            raise PeerFailure(peer, f"sent an invalid frame: {e}") from None
        protocol.check_reply(peer, frame, frame_type)
        return frame

    async def ping(self, peer: str) -> tuple[float, protocol.InfoReply]:
        """Round-trip time of an info request, and the info (PeerFailure if malformed). Timed after the first dial: its handshakes
        take several round trips (each over the relay for a relayed node) that no step pays again, so the
        time is the path's own: through the relay when the node is reached through one."""
        await self._dial(peer)
        started = time.perf_counter()
        info = await self.request(peer, protocol.INFO, protocol.Info().to_wire())
        elapsed = time.perf_counter() - started
        try:
            return elapsed, protocol.InfoReply.parse(info)
        except ProtocolError as e:
            raise PeerFailure(peer, f"malformed info: {e}") from None


class SwarmClient(PeerLink):
    """A client process's DHT (client mode) and P2P, driven from a background event loop."""

    def __init__(self, initial_peers: Sequence[str], identity: Identity | None = None,
                 request_timeout: float = 60.0) -> None:
        if not initial_peers:
            raise RoutingError("give at least one initial peer multiaddr (from `swarmlm swarm local` or a node's "
                               "'maddr' line)")
        self.identity = identity or Identity.generate()
        self._key_dir = tempfile.TemporaryDirectory(prefix="swarmlm-client-")
        key_path = Path(self._key_dir.name) / "identity.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.identity.to_bytes())
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="swarmlm-client", daemon=True)
        self._thread.start()
        try:
            self.dht = dht_io.SwarmDHT(initial_peers=list(initial_peers), client_mode=True, start=True,
                                       identity_path=str(key_path), check_if_identity_free=False,
                                       record_validators=[SignedRecordValidator(self.identity.seed)])
        except Exception as e:
            self._stop_loop()
            raise RoutingError(f"could not join the swarm through {list(initial_peers)}: {e}") from None
        super().__init__(self.run(self.dht.replicate_p2p()), request_timeout)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the client loop and wait for its result (from another thread: on the loop
        itself, waiting would stall the loop for good; await `on_loop` there)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SwarmClient.run called on the client loop's own thread; await on_loop(...) there")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine on the client loop from any event loop, blocking none: directly when the
        caller runs on the client loop (a gateway serving on it), else handed over and back."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def records(self, root: str, num_blocks: int, timeout: float = dht_io.DHT_TIMEOUT) -> dict[str, ServerRecord]:
        return await dht_io.fetch_records(self.dht, root, num_blocks, timeout)

    def close(self) -> None:
        try:
            self.run(self._cancel_tasks(), timeout=10)
            self.dht.shutdown()
        finally:
            self._stop_loop()

    async def _cancel_tasks(self) -> None:
        """Close the P2P replica and finish every task, so nothing is left pending when the loop stops."""
        await self.p2p.shutdown()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self._key_dir.cleanup()


def is_node_failure(error: RoutingError) -> bool:
    """Errors that mean 'try another node' rather than 'the request itself is wrong'."""
    if isinstance(error, PeerFailure):
        return True
    return isinstance(error, RemoteError) and error.code in (
        ErrorCode.CACHE_FULL.value, ErrorCode.CACHE_RECLAIMED.value, ErrorCode.DRAINING.value, ErrorCode.INTERNAL.value, ErrorCode.WRONG_MODEL.value,
        ErrorCode.VERSION.value, ErrorCode.UNKNOWN_SESSION.value, ErrorCode.SESSION_EXPIRED.value,
        ErrorCode.BUSY.value, ErrorCode.PEER_LIMIT.value, ErrorCode.LEDGER_UNAVAILABLE.value, ErrorCode.TIMEOUT.value,
        ErrorCode.PUSH_REFUSED.value, ErrorCode.BAD_POSITION.value)


def is_busy(error: RoutingError) -> bool:
    """A node whose cache is full refused: it did nothing wrong and will have room again soon."""
    return isinstance(error, RemoteError) and error.code == ErrorCode.CACHE_FULL.value


def deserves_ban(error: RoutingError) -> bool:
    """A node that closed an idle session, took back pages beyond a fair share, or is leaving politely,
    did nothing wrong; nor did one holding fewer of our positions than we sent it (`bad_position`: the
    client checks its own steps, so the node's copy was cut short, say by a push that came late)."""
    return not (isinstance(error, RemoteError) and error.code in (ErrorCode.SESSION_EXPIRED.value,
                                                                   ErrorCode.CACHE_RECLAIMED.value,
                                                                   ErrorCode.DRAINING.value,
                                                                   ErrorCode.BAD_POSITION.value))


async def gather_pings(client: PeerLink, peers: Sequence[str], timeout: float = 3.0, retry_timeout: float = 12.0
                       ) -> dict[str, tuple[float, protocol.InfoReply] | BaseException]:
    """Each peer's (rtt, pong), or why not. A first ping also dials the peer, which on a loaded machine
    or a slow path can outlast `timeout`: a peer that timed out is asked once more with `retry_timeout`
    before it counts as silent, so a slow start does not cost an honest node its place in routes."""
    async def one(peer: str, deadline: float) -> tuple[float, protocol.InfoReply]:
        return await asyncio.wait_for(client.ping(peer), deadline)

    async def both(peer: str) -> tuple[float, protocol.InfoReply]:
        try:
            return await one(peer, timeout)
        except asyncio.TimeoutError:
            return await one(peer, retry_timeout)

    results: Sequence[Any] = await asyncio.gather(*(both(p) for p in peers), return_exceptions=True)
    return dict(zip(peers, results))

