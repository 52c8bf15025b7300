"""Measuring a link the way the swarm's TCP streams see it: handshake round trips and steady bulk rate.

Both probes take sockets made inside the two hosts' namespaces (a listener on one end, unconnected
sockets on the other), so the harness measures its own lab without helper processes, and close them.
Give the sockets a timeout: a lab that carries nothing then fails with `socket.timeout`, not a hang.
"""

from __future__ import annotations

import socket
import statistics
import struct
import threading
import time
from typing import Callable

CHUNK = 1 << 18
# Reno, built into every kernel, keeps a link with a drop-tail queue of a round trip or more full, so
# its steady rate is the link's. BBR v1 (these machines' default) overfilled a one-round-trip queue
# and lost packets every probe cycle, reaching 85-90% at 100 ms: a fact about BBR, not the link.
CONGESTION_CONTROL = b"reno"


def _serve_one(listener: socket.socket, handle: Callable[[socket.socket], None]) -> threading.Thread:
    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            handle(conn)

    thread = threading.Thread(target=run, name="wanlab-probe", daemon=True)
    thread.start()
    return thread


def round_trip_ms(listener: socket.socket, new_socket: Callable[[], socket.socket], pings: int = 12) -> float:
    """Median time of a TCP handshake (connect() returns when the SYN-ACK is back).

    The listening kernel answers by itself, so no thread of this process has to wake up on the far
    side: the figure is the link's plus one wake-up of the caller, not two.
    """
    address, opened, samples = listener.getsockname(), [], []
    with listener:
        try:
            for _ in range(pings):
                opened.append(sock := new_socket())
                started = time.perf_counter()
                sock.connect(address)
                samples.append(time.perf_counter() - started)
        finally:
            for sock in opened:
                sock.close()
    return statistics.median(samples) * 1000


def bulk_mbit(listener: socket.socket, client: socket.socket, seconds: float, warmup: float) -> float:
    """Rate at which the receiver acknowledged payload during `seconds` s, after `warmup` s of slow start.

    After each write the sender reads the kernel's count of acknowledged bytes (TCP_INFO), stamped
    with the clock, and the rate is the least-squares slope of those points: a loss stalls the
    cumulative ACK for a round trip and then jumps, which would swing a two-point estimate by a
    round trip's worth of data, and a late thread (this process also drains the receiver, on a
    busy machine) only thins the points instead of adding data from outside the window.
    """
    def sink(conn: socket.socket) -> None:
        buffer = bytearray(CHUNK)
        while conn.recv_into(buffer):
            pass

    server = _serve_one(listener, sink)
    chunk = bytes(CHUNK)
    points: list[tuple[float, int]] = []
    with listener, client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, CONGESTION_CONTROL)
        client.connect(listener.getsockname())
        start = time.perf_counter() + warmup
        while (now := time.perf_counter()) < start + seconds:
            client.sendall(chunk)
            if now >= start:
                points.append(_acked(client))
        client.shutdown(socket.SHUT_WR)
        server.join()
    slope, _ = statistics.linear_regression(*zip(*points))
    return slope * 8 / 1e6


def _acked(sock: socket.socket) -> tuple[float, int]:
    """Now, and tcpi_bytes_acked of `sock` (struct tcp_info, offset 120, since Linux 4.1)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return time.perf_counter(), struct.unpack_from("Q", info, 120)[0]
