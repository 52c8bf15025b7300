"""Whether peers can dial a node: a dial-back by a peer, and the relay circuits that stand in when not.

A volunteer's home router lets the node dial out and nobody dial in, while the node only knows the
private address it listens on. So a node asks a peer to open a plain TCP connection back to the
address the peer saw it come from, at the port it listens on (AutoNAT's rule: never anyone else's
address, so a dial-back cannot be aimed at a third party). Open: "reachable directly". Not: the
node is private, and p2pd's AutoRelay (circuit relay v2) reserves circuits on public peers; the
node then announces only its `/p2p-circuit` addresses ("via relay R"), which clients and
predecessors dial like any other. Private and holding no circuit: "unreachable".

The relay sees only the encrypted libp2p stream it forwards. What a public node grants each peer
as a relay is bounded by p2pd's relay v2 limits (`RelayLimits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from hivemind.p2p.p2p_daemon_bindings.datastructures import StreamInfo

from . import protocol, wire
from .errors import ErrorCode, PeerFailure, ProtocolError
from .protocol import MAX_PORTS

if TYPE_CHECKING:
    from .client import PeerLink

DIAL_TIMEOUT = 3.0  # s for the TCP handshake back: a home router refuses at once or drops
MODES = ("auto", "public", "private")


@dataclass(frozen=True)
class RelayLimits:
    """What a public node's relay service grants each peer (p2pd's relay v2 resource limits).

    A relay cannot be used to amplify: it forwards bytes one for one, only to peers holding a
    reservation on it (never to an address a requester names), within these limits; libp2p adds
    at most 4 reservations per peer and 8 per IP address. Each circuit holds two copy buffers of
    `buffer_bytes` (p2pd's default, 16 MiB, would let 16 circuits of one peer pin 512 MiB)."""
    reservations: int = 128           # peers that may hold a reservation on this relay
    circuits_per_peer: int = 16       # relayed connections open at once, per peer
    bytes_per_circuit: int = 1 << 30  # each direction of one relayed connection, then it is reset
    seconds_per_circuit: int = 3600   # a relayed connection's lifetime, then it is reset
    buffer_bytes: int = 64 << 10      # per direction of a circuit: a step's frame is a few KiB to a few MiB

    def p2pd_flags(self, enabled: bool) -> dict[str, Any]:
        """Opting out keeps the service on with no room: with `-relayService=0` this p2pd still relays
        (go-libp2p's own relay, at its default limits: the lab's private nodes reserved on such nodes)."""
        if not enabled:
            return {"relayService": True, "relayMaxReservations": 0, "relayMaxCircuits": 0}
        return {"relayService": True, "relayMaxReservations": self.reservations,
                "relayMaxCircuits": self.circuits_per_peer, "relayDataLimit": self.bytes_per_circuit,
                "relayTimeLimit": f"{self.seconds_per_circuit}s", "relayBufferSize": self.buffer_bytes}

    def __str__(self) -> str:
        return (f"{self.reservations} reservations, {self.circuits_per_peer} circuits per peer, "
                f"{self.bytes_per_circuit >> 20} MiB and {self.seconds_per_circuit // 60} min per circuit, "
                f"{self.buffer_bytes >> 10} KiB buffers")


def p2p_options(mode: str) -> dict[str, Any]:
    """hivemind P2P options for a node: AutoNAT and AutoRelay always (p2pd reserves circuits only once it
    finds itself private); `private`/`public` skip AutoNAT's verdict."""
    options: dict[str, Any] = {"use_relay": True, "use_auto_relay": True, "auto_nat": True}
    if mode != "auto":
        options["force_reachability"] = mode
    return options


@dataclass(frozen=True)
class Reachability:
    direct: bool | None           # a peer's dial-back opened a connection; None: no peer answered yet
    relays: tuple[str, ...] = ()  # peer IDs of the relays this node holds circuits on

    def describe(self) -> str:
        if self.direct:
            return "reachable directly"
        if self.relays:
            return "via relay " + ", ".join(self.relays)
        return "unreachable" if self.direct is False else "not known yet"

    @property
    def kind(self) -> str:
        """direct, relay, unreachable or unknown: a metrics label."""
        if self.direct:
            return "direct"
        return "relay" if self.relays else ("unreachable" if self.direct is False else "unknown")


def relays_of(maddrs: Iterable[str]) -> tuple[str, ...]:
    """The relay peer IDs in circuit addresses (`…/p2p/RELAY/p2p-circuit`), in order, once each."""
    found: list[str] = []
    for maddr in maddrs:
        head, sep, _ = maddr.partition("/p2p-circuit")
        if sep and "/p2p/" in head:
            relay = head.rsplit("/p2p/", 1)[1]
            if relay not in found:
                found.append(relay)
    return tuple(found)


def to_announce(maddrs: Sequence[str], reach: Reachability) -> list[str]:
    """The addresses peers can dial: a private node's circuits only (its own addresses are behind its
    router, and every dial of them would fail first); everything otherwise."""
    circuits = [m for m in maddrs if "/p2p-circuit" in m]
    return circuits if reach.direct is False and circuits else list(maddrs)


def listen_ports(maddrs: Iterable[str]) -> list[int]:
    """The TCP ports of a node's own (non-circuit) addresses, for a dial-back request."""
    ports = []
    for maddr in maddrs:
        parts = maddr.split("/")
        if "p2p-circuit" not in parts and "tcp" in parts:
            port = int(parts[parts.index("tcp") + 1])
            if port not in ports:
                ports.append(port)
    return ports[:MAX_PORTS]


def observed_ip(info: StreamInfo) -> str | None:
    """The IPv4/IPv6 address the asker's connection came from; None for a relayed one (no dial-back)."""
    parts = str(info.addr).split("/")
    if "p2p-circuit" in parts or len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
        return None
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(parts[2]))
    return None


def requested_ports(frame: dict[str, Any]) -> list[int]:
    """The ports a dial-back request names (at most MAX_PORTS real ones)."""
    return protocol.opening(frame, protocol.Dialback).ports


async def dial(ip: str, port: int, timeout: float = DIAL_TIMEOUT) -> bool:
    """Whether a TCP connection to ip:port opens within `timeout` (closed at once: only the handshake)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def answer(info: StreamInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The `swarmlm.dialback` handler: dial the asker back at its observed address, on the ports it
    names, and say which opened."""
    try:
        ports = requested_ports(await wire.read_frame(reader, 4096, idle_timeout=10.0))
        ip = observed_ip(info)
        opened = [p for p, ok in zip(ports, await asyncio.gather(*(dial(ip, p) for p in ports))) if ok] if ip else []
        await wire.write_frame(writer, protocol.DialedBack(ip or "", opened).to_wire())
    except (ProtocolError, ConnectionError, asyncio.IncompleteReadError) as e:
        with contextlib.suppress(ConnectionError):
            await wire.write_frame(writer, protocol.Error(ErrorCode.BAD_FRAME.value, str(e)).to_wire())
    finally:
        writer.close()


async def ask(link: "PeerLink", peer: str, ports: Sequence[int]) -> bool:
    """Ask `peer` to dial us back on `ports`: whether any opened. PeerFailure if it does not answer."""
    reply = await link.request(peer, protocol.DIALBACK, protocol.Dialback(list(ports)[:MAX_PORTS]).to_wire(),
                               timeout=DIAL_TIMEOUT + 10)
    try:
        return bool(protocol.DialedBack.parse(reply).open)
    except ProtocolError as e:
        raise PeerFailure(peer, f"sent an invalid dial-back reply: {e}") from None
