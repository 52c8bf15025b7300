"""The lab's wire: one process that owns a lab's namespaces and carries every packet between them.

This kernel has no `netem` (nor fq or clsact), so nothing in `tc` can delay a packet. Instead each
host namespace (for a host at home, its router's: wanlab_nat.py) gets a TUN device (`wan0`, the
lab's /24 routed through it), created by this process
after entering the namespace, so the device lives there while the file descriptor stays here. Every
IPv4 packet a host sends is read here, serialised on the sender's uplink at the lab's bandwidth
(one uplink per host, shared by all its destinations), and written into the destination's TUN at
departure + RTT/2 + the link's jitter. The uplink drops what would wait longer than two round trips
(at least eight packets), a home router's buffer: with one round trip a TCP upload at 20 ms and
100 Mbit/s got 89-97 Mbit/s on these busy cores, with two it gets 99.8.

Jitter wanders: each directed link's extra delay moves linearly between random points within
+-jitter, a new point every 4 x jitter, so it changes by at most half a millisecond per millisecond
and a later packet can never overtake an earlier one (TCP sees no reordering). Drawing it per packet
and then holding packets back to keep their order (what netem cannot do) would bias every
back-to-back pair, an ACK and the next request, towards the larger of two draws: +2/3 of the jitter
on the round trip, which the self-check measured.

Why it stays cheap on two shared cores: a 32000-byte MTU means 100 Mbit/s is ~400 packets/s plus
their ACKs (2-3% of a core, measured), and the loop sleeps in epoll until the next packet is due.
(65000 halves that again, but a link of 20 ms at 100 Mbit then holds four packets, too few for TCP
to keep it full: the self-check read 91-95 Mbit/s.) epoll rounds timeouts up to whole milliseconds,
so the loop wakes half a millisecond early and releases what is due within half a millisecond: the
error per hop is centred on zero instead of adding up to a millisecond.

Why it owns the namespaces: it creates them only while holding the lab's lock, and removes them
(killing what runs inside) whenever it ends: on EOF of its stdin (the harness closed it, or died,
however), on SIGTERM, and, through PR_SET_PDEATHSIG, when its parent dies while the pipe is shared
with some forked child. A SIGKILLed forwarder leaves a lab whose lock is free, for `wanlab.py down`.

    python scripts/wanlab_forwarder.py SPEC_JSON     (started by WanLab; prints `ready` or `error …`)
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import itertools
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import wanlab_nat as nat
import wanlab_netns as netns
from wanlab_spec import LabError, LabSpec

MTU = 32000
TUN = "wan0"
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
PR_SET_PDEATHSIG = 1
HALF_TICK = 0.0005  # s; see the module docstring


def run_promptly() -> None:
    """Put the calling thread first in line for a core (SCHED_FIFO, the lowest real-time priority;
    children start as ordinary processes). The nodes compute on the same two cores, and a late
    wake-up shows as delay: at nice -10 with a load of 10, round trips of 20 ms read 22-23 ms, in
    SCHED_FIFO 20.3-20.4. It costs nothing: the forwarder sleeps unless a packet is due.
    Where that is not allowed, the thread stays as it is and the self-check judges the result."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    except PermissionError:
        pass


def open_tun(namespace: str, address: str) -> int:
    """A TUN device inside `namespace` carrying the lab's /24, read and written through the returned fd."""
    with netns.entered(namespace):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", TUN.encode(), IFF_TUN | IFF_NO_PI))
    netns.ip("-n", namespace, "link", "set", TUN, "mtu", str(MTU), "up")
    netns.ip("-n", namespace, "addr", "add", f"{address}/24", "dev", TUN)
    return fd


@dataclass
class Uplink:
    bits_per_s: float
    queue_s: float      # drop-tail: a packet that would wait longer than this is lost
    free_at: float = 0.0


class Wander:
    """A link's jitter: linear between random points in +-amplitude, one every 4 x amplitude."""

    def __init__(self, amplitude: float, rng: random.Random) -> None:
        self.amplitude, self.period, self.rng = amplitude, 4 * amplitude, rng
        self.prev_at = self.next_at = -self.period
        self.prev = self.next = 0.0

    def at(self, t: float) -> float:
        if not self.amplitude:
            return 0.0
        if t >= self.next_at:
            if t >= self.next_at + self.period:
                self.next_at = t  # after an idle spell any start is fine: no earlier packet is that late
            self.prev_at, self.prev = self.next_at, self.next
            self.next_at, self.next = self.prev_at + self.period, self.rng.uniform(-self.amplitude, self.amplitude)
        return self.prev + (t - self.prev_at) / self.period * (self.next - self.prev)


class Wire:
    """Packets in flight: when each leaves its sender's uplink and arrives at its destination."""

    def __init__(self, spec: LabSpec, tuns: dict[str, int]) -> None:
        rng = random.Random()
        self.fd_of = {socket.inet_aton(spec.public_address(h)): fd for h, fd in tuns.items()}
        bps = spec.mbit * 1e6
        self.uplinks = {fd: Uplink(bps, max(2 * spec.rtt_ms / 1000, 8 * MTU * 8 / bps)) for fd in tuns.values()}
        self.links = {(tuns[a], tuns[b]): (spec.rtt(a, b) / 2000, Wander(spec.jitter_ms / 1000, rng))
                      for a in spec.hosts for b in spec.hosts if a != b}
        self.in_flight: list[tuple[float, int, int, bytes]] = []
        self._order = itertools.count()

    def send(self, src: int, packet: bytes, now: float) -> None:
        dst = self.fd_of.get(packet[16:20])
        if packet[0] >> 4 != 4 or dst is None or dst == src:
            return  # not IPv4 (IPv6 router solicitations), or for no host of the lab
        up, (one_way, jitter) = self.uplinks[src], self.links[(src, dst)]
        start = max(now, up.free_at)
        if start - now > up.queue_s:
            return
        up.free_at = start + len(packet) * 8 / up.bits_per_s
        heapq.heappush(self.in_flight, (up.free_at + one_way + jitter.at(up.free_at), next(self._order), dst, packet))

    def deliver(self, until: float) -> None:
        while self.in_flight and self.in_flight[0][0] <= until:
            _, _, dst, packet = heapq.heappop(self.in_flight)
            try:
                os.write(dst, packet)
            except OSError:
                pass  # the destination's queue is full or its device gone: lost, as on a wire

    def run(self, stop: Sequence[int]) -> None:
        """Forward until one of the `stop` descriptors becomes readable."""
        poller = select.epoll()
        for fd in (*stop, *self.uplinks):
            poller.register(fd, select.EPOLLIN)
        clock = time.monotonic
        while True:
            timeout = max(0.0, self.in_flight[0][0] - clock() - HALF_TICK) if self.in_flight else -1
            for fd, _ in poller.poll(timeout):
                if fd in stop:
                    return
                now = clock()
                while True:
                    try:
                        self.send(fd, os.read(fd, MTU + 1), now)
                    except BlockingIOError:
                        break
            self.deliver(clock() + HALF_TICK)


def serve(spec: LabSpec) -> int:
    """Build the lab, say `ready`, forward until told to stop, then remove the lab whatever happened.

    Stop signals only write to a pipe the loop watches, like stdin, which the harness never writes
    to (readable means closed): its death brings EOF and the death signal together, and neither may
    interrupt the clean-up the other started.
    """
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signalled, wakeup = os.pipe()
    os.set_blocking(wakeup, False)
    signal.set_wakeup_fd(wakeup)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    run_promptly()
    tuns: dict[str, int] = {}
    try:
        lock = netns.hold_lock(spec.name)
    except (LabError, OSError) as e:
        print(f"error {e}", flush=True)
        return 1
    try:
        for namespace in netns.namespaces_of(spec.name):  # we hold the lock: whatever is there, a crash left
            netns.remove(namespace)
        for host in spec.hosts:
            netns.create(spec.namespace(host))
            if spec.nat_kind(host):
                nat.build_home(spec, host)
            tuns[host] = open_tun(spec.wire_namespace(host), spec.public_address(host))
            nat.refuse_homes(spec.wire_namespace(host))
        print("ready", flush=True)
        Wire(spec, tuns).run(stop=(sys.stdin.fileno(), signalled))
    except (LabError, OSError) as e:
        print(f"error {e}", flush=True)
        return 1
    finally:
        for fd in tuns.values():
            os.close(fd)
        netns.remove_lab(spec.name, lock)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    return serve(LabSpec.from_json(args[0]))


if __name__ == "__main__":
    raise SystemExit(main())
