"""The WAN lab: real SwarmLM processes on emulated internet links, each host in its own namespace.

Every figure on 127.0.0.1 hides the network. A lab gives each host (bootstrap peer, nodes, client)
a network namespace with its own address, joined by one forwarder process (wanlab_forwarder.py)
that adds the configured round trip, jitter and bandwidth between every pair of hosts, with
per-link RTT overrides (say, one slow link between two nodes). On start the lab measures itself
(TCP round trip and bulk throughput between two hosts, and the RTT of every overridden link) and
refuses to run when a figure is more than 10% off. A host can live at home, behind a NAT router of its
own (wanlab_nat.py); the lab then also proves on start that nobody outside can open a connection to it
and that it can dial out. Everything goes on close, on Ctrl-C, and on a
crash or SIGKILL of the harness: the forwarder owns the namespaces and kills what runs inside.

    python scripts/wanlab.py up --nodes 3 --rtt-ms 50 --mbit 100 --jitter-ms 5 [--link node-1,node-2=150]
                                [--nat node-2,client] [--symmetric-nat node-3]
    python scripts/wanlab.py selfcheck --rtt-ms 40 --mbit 50 [--nat b]
    python scripts/wanlab.py down            # remove what crashed labs left behind

From Python (tests/wan use this):

    with WanLab(swarm_hosts(3), rtt_ms=40, mbit=100) as lab, \\
            LocalSwarm(model, state_dir, placement=lab) as swarm:
        swarm.start(3, num_blocks)
        lab.run(CLIENT, [*SWARMLM, "generate", "--peers", *swarm.initial_peers, "--json", prompt])
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, NoReturn, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wanlab_nat as nat  # noqa: E402
import wanlab_netns as netns  # noqa: E402
from node.errors import NodeError  # noqa: E402
from node.local_swarm import BOOTSTRAP, LocalSwarm, node_name  # noqa: E402
from shards.errors import ShardsError  # noqa: E402
from wanlab_forwarder import run_promptly  # noqa: E402
from wanlab_probe import bulk_mbit, round_trip_ms  # noqa: E402
from wanlab_spec import LabError, LabSpec  # noqa: E402

SWARMLM = [sys.executable, "-m", "swarmlm.cli"]  # the client's commands (generate, node status) on a lab host

log = logging.getLogger("wanlab")
CLIENT = "client"
FORWARDER = [sys.executable, str(Path(__file__).with_name("wanlab_forwarder.py"))]
TOLERANCE = 0.10
RTT_FLOOR_MS = 0.5   # what the kernel and the probe add on their own: the tolerance of a 0 ms lab
BULK_SECONDS = 2.0
MAX_EXTRA_PINGS = 200
INBOUND_TIMEOUT = 3.0  # s an outside host waits for a connection into a home before calling it not opened
__all__ = ["CLIENT", "LabError", "NatCheck", "SelfCheck", "SelfCheckError", "WanLab", "swarm_hosts"]


class SelfCheckError(LabError):
    """The lab measured itself more than 10% off its configuration."""


def swarm_hosts(nodes: int) -> list[str]:
    """The hosts a swarm of `nodes` needs in a lab: LocalSwarm's bootstrap and node names, and the client."""
    return [BOOTSTRAP, *(node_name(i) for i in range(1, nodes + 1)), CLIENT]


@dataclass(frozen=True)
class SelfCheck:
    a: str
    b: str
    rtt_ms: float
    expected_rtt_ms: float
    mbit: float | None            # None: only the round trip was measured
    expected_mbit: float
    forwarder_cpu: float          # share of one core the forwarder used while measuring

    def problems(self) -> list[str]:
        found = []
        if abs(self.rtt_ms - self.expected_rtt_ms) > max(TOLERANCE * self.expected_rtt_ms, RTT_FLOOR_MS):
            found.append(f"RTT {self.rtt_ms:.1f} ms instead of {self.expected_rtt_ms:g} ms")
        if self.mbit is not None and abs(self.mbit - self.expected_mbit) > TOLERANCE * self.expected_mbit:
            found.append(f"throughput {self.mbit:.1f} Mbit/s instead of {self.expected_mbit:g} Mbit/s")
        return found

    def __str__(self) -> str:
        rate = f", {self.mbit:.1f} Mbit/s (configured {self.expected_mbit:g})" if self.mbit is not None else ""
        return (f"{self.a} -> {self.b}: RTT {self.rtt_ms:.1f} ms (configured {self.expected_rtt_ms:g}){rate}; "
                f"forwarder {self.forwarder_cpu:.0%} of a core")


@dataclass(frozen=True)
class NatCheck:
    """What an outside host saw of a host at home: connections it opened, and its own attempts to open one."""
    host: str
    kind: str                     # 'cone' or 'symmetric'
    public_address: str           # the router's
    seen_from: tuple[str, ...]    # the source address of two connections the host opened to two ports outside
    ports: tuple[int, int, int]   # the host's source port, and the ports the two connections arrived from
    inbound: tuple[str, ...]      # how each attempt from outside ended ("opened" would be a hole)

    def problems(self) -> list[str]:
        found = []
        if set(self.seen_from) != {self.public_address}:
            found.append(f"its connections came from {', '.join(self.seen_from)}, not its router's "
                         f"{self.public_address} (no masquerade)")
        if self.kind == "cone" and len(set(self.ports)) != 1:
            found.append(f"its source port {self.ports[0]} arrived as {self.ports[1]} and {self.ports[2]}, "
                         f"not kept for every destination")
        if self.kind == "symmetric" and self.ports[1] == self.ports[2]:
            found.append(f"two destinations saw the same port {self.ports[1]}: the mapping is not per connection")
        found += [f"an outside host opened a connection: {attempt}" for attempt in self.inbound if "opened" in attempt]
        return found

    def __str__(self) -> str:
        mapping = "port kept" if len(set(self.ports)) == 1 else "a new port per connection"
        return (f"{self.host} behind {self.kind} NAT at {self.public_address}: dials out (seen from "
                f"{self.seen_from[0]}, source port {self.ports[0]} -> {self.ports[1]}, {self.ports[2]}: {mapping}); "
                f"from outside {'; '.join(self.inbound)}")


class WanLab:
    """A running lab; building it starts the forwarder and passes the self-check, or raises LabError."""

    def __init__(self, hosts: Sequence[str], rtt_ms: float, mbit: float, jitter_ms: float = 0.0,
                 link_rtt_ms: Mapping[frozenset[str], float] | None = None, *, name: str | None = None,
                 nat: Mapping[str, str] | None = None, forwarder: Sequence[str] = FORWARDER) -> None:
        """`nat`: hosts behind a NAT router of their own, each 'cone' or 'symmetric'.
        `forwarder` replaces the forwarder program (tests run a deliberately miscalibrated one this way)."""
        self.spec = LabSpec.build(hosts, rtt_ms, mbit, jitter_ms, link_rtt_ms, name, nat)
        if os.geteuid() != 0:
            raise LabError("the WAN lab needs root (network namespaces and TUN devices): run it as root")
        log.info("lab %s: building %d hosts (%s)", self.name, len(self.spec.hosts), ", ".join(self.spec.hosts))
        self._forwarder = subprocess.Popen([*forwarder, self.spec.to_json()], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True, start_new_session=True)
        said = self._forwarder.stdout.readline().strip()  # type: ignore[union-attr]
        try:
            if said != "ready":
                raise LabError(said.removeprefix("error ") or f"the forwarder exited ({self._forwarder.wait()})")
            self.checks = self._check_on_start()
            self.nat_checks = [self._natcheck_on_start(host) for host, _ in self.spec.nat]
        except BaseException:
            self.close()
            raise

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.spec.hosts

    @property
    def running(self) -> bool:
        return self._forwarder.poll() is None

    @property
    def forwarder_pid(self) -> int:
        return self._forwarder.pid

    def address(self, host: str) -> str:
        """The host's own IPv4 (what it listens on): a private one for a host at home."""
        return self.spec.address(host)

    def public_address(self, host: str) -> str:
        """Where the host's packets come from on the lab's wire: its router's address for a host at home."""
        return self.spec.public_address(host)

    def namespace(self, host: str) -> str:
        return self.spec.namespace(host)

    def wrap(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the host's namespace."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def run(self, host: str, argv: Sequence[str], timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run a command on a host to completion, capturing its output as text."""
        return subprocess.run(self.wrap(host, argv), capture_output=True, text=True, timeout=timeout)

    def selfcheck(self, a: str, b: str, *, bulk: bool = True) -> SelfCheck:
        """Measure a -> b: TCP round trip and (with `bulk`) throughput; SelfCheckError when either is more
        than 10% off the configuration."""
        expected_rtt = self.spec.rtt(a, b)
        timeout = 10 + 20 * expected_rtt / 1000
        # enough pings that jitter moves their median by ~2% of the round trip (one standard error)
        pings = 12 + min(MAX_EXTRA_PINGS, int(2500 * (self.spec.jitter_ms / expected_rtt) ** 2)
                         if self.spec.jitter_ms else 0)
        cpu_before, started = self._forwarder_cpu_seconds(), time.monotonic()
        try:
            with _prompt_thread():
                rtt = round_trip_ms(self._listener(b, timeout), lambda: self._socket(a, timeout), pings)
                rate = bulk_mbit(self._listener(b, timeout), self._socket(a, timeout), BULK_SECONDS,
                                 warmup=max(0.5, 15 * expected_rtt / 1000)) if bulk else None
        except OSError as e:
            raise LabError(f"lab {self.name} carries no TCP between {a} and {b} ({e}); the forwarder "
                           f"{'runs but drops everything' if self.running else 'exited'}") from e
        cpu = (self._forwarder_cpu_seconds() - cpu_before) / (time.monotonic() - started)
        check = SelfCheck(a, b, rtt, expected_rtt, rate, self.spec.mbit, cpu)
        if problems := check.problems():
            raise SelfCheckError(f"lab {self.name} is off by more than {TOLERANCE:.0%} between {a} and {b}: "
                           f"{'; '.join(problems)}. Is this machine overloaded (the forwarder needs a core's "
                           f"attention every few ms)? Retry when it is idle, or ask for less (--mbit, --rtt-ms).")
        return check

    def close(self) -> None:
        """Stop the forwarder, which kills everything inside the lab and removes its namespaces."""
        forwarder = self._forwarder
        if forwarder.poll() is None:
            forwarder.stdin.close()  # type: ignore[union-attr]
            try:
                forwarder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                forwarder.kill()
                forwarder.wait()
        forwarder.stdout.close()  # type: ignore[union-attr]
        if netns.namespaces_of(self.name):  # the forwarder died without cleaning up
            with contextlib.suppress(LabError):  # else `wanlab.py down` holds the lock and is removing them
                netns.remove_lab(self.name, netns.hold_lock(self.name))
        log.info("lab %s: removed", self.name)

    def __enter__(self) -> "WanLab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_on_start(self) -> list[SelfCheck]:
        """Full check on one default link, RTT only on every overridden one. The listening end is a host
        outside any home (nobody can dial into one); a link between two homes is not measured."""
        overridden = {(a, b) for a, b, _ in self.spec.link_rtt_ms}
        pairs = [p for p in ((a, b) for i, a in enumerate(self.hosts) for b in self.hosts[i + 1:])
                 if any(map(self._dialable, p))]
        default = next((p for p in pairs if p not in overridden and p[::-1] not in overridden), pairs[0])
        default = default if self._dialable(default[1]) else default[::-1]
        log.info("lab %s: measuring %s <-> %s (a few seconds)", self.name, *default)
        checks = [self._selfcheck_twice(*default)]
        for a, b in sorted(overridden - {default, default[::-1]}):
            if not any(map(self._dialable, (a, b))):
                log.info("lab %s: %s and %s are both behind NAT; their link is not measured", self.name, a, b)
                continue
            log.info("lab %s: measuring the overridden link %s <-> %s", self.name, a, b)
            checks.append(self._selfcheck_twice(*((a, b) if self._dialable(b) else (b, a)), bulk=False))
        return checks

    def _dialable(self, host: str) -> bool:
        return self.spec.nat_kind(host) is None

    def natcheck(self, host: str) -> NatCheck:
        """Prove a home's NAT from an outside host: two connections out (their source address and ports as
        seen outside), then attempts to open one in, to the host's private address, to its router's address
        at the port the host listens on, and at the port its last connection went out from. LabError when
        the host cannot dial out; `problems()` says what else is wrong."""
        kind, outside = self.spec.nat_kind(host), next(h for h in self.hosts if self._dialable(h))
        assert kind, f"{host} is not behind NAT"
        listeners = [self._listener(outside, INBOUND_TIMEOUT) for _ in range(2)]
        inside = self._listener(host, INBOUND_TIMEOUT)
        try:
            source_port, seen = 0, []
            for listener in listeners:
                sock = self._socket(host, INBOUND_TIMEOUT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((self.address(host), source_port))
                source_port = sock.getsockname()[1]
                try:
                    sock.connect(listener.getsockname())
                except OSError as e:
                    raise LabError(f"{host} behind NAT cannot dial out to {outside} ({e})") from e
                conn, peer = listener.accept()
                seen.append(peer)
                conn.close()
                sock.close()
            listen_port = inside.getsockname()[1]
            targets = [(self.address(host), listen_port), (self.public_address(host), listen_port),
                       (self.public_address(host), seen[-1][1])]
            inbound = tuple(self._dial_in(outside, inside, target) for target in targets)
        finally:
            for listener in (*listeners, inside):
                listener.close()
        check = NatCheck(host, kind, self.public_address(host), tuple(ip for ip, _ in seen),
                         (source_port, seen[0][1], seen[1][1]), inbound)
        if problems := check.problems():
            raise LabError(f"lab {self.name}: the NAT in front of {host} is not a home router's: "
                           f"{'; '.join(problems)}")
        return check

    def _dial_in(self, outside: str, inside: socket.socket, target: tuple[str, int]) -> str:
        """How an attempt from `outside` to open a connection to `target` ended ('opened' if the host at
        home accepted it)."""
        sock = self._socket(outside, INBOUND_TIMEOUT)
        try:
            sock.connect(target)
        except OSError as e:
            return f"{target[0]}:{target[1]} {e.strerror or type(e).__name__}"
        finally:
            sock.close()
        inside.settimeout(0.5)
        try:
            inside.accept()[0].close()
            return f"{target[0]}:{target[1]} opened to the host"
        except OSError:
            return f"{target[0]}:{target[1]} opened (to someone other than the host)"

    def _natcheck_on_start(self, host: str) -> NatCheck:
        log.info("lab %s: proving the NAT in front of %s", self.name, host)
        return self.natcheck(host)

    def _selfcheck_twice(self, a: str, b: str, bulk: bool = True) -> SelfCheck:
        """A second measurement before refusing: another process's burst on these shared cores can
        delay one, while a lab that is really off fails both."""
        try:
            return self.selfcheck(a, b, bulk=bulk)
        except SelfCheckError as e:
            log.info("%s; measuring again", e)
            return self.selfcheck(a, b, bulk=bulk)

    def _listener(self, host: str, timeout: float) -> socket.socket:
        with netns.entered(self.namespace(host)):
            listener = socket.create_server((self.address(host), 0), backlog=12 + MAX_EXTRA_PINGS)
        listener.settimeout(timeout)
        return listener

    def _socket(self, host: str, timeout: float) -> socket.socket:
        with netns.entered(self.namespace(host)):
            sock = socket.socket()
        sock.settimeout(timeout)
        return sock

    def _forwarder_cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.forwarder_pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextlib.contextmanager
def _prompt_thread() -> Iterator[None]:
    """This thread as prompt as the forwarder while it measures, so that on a busy machine the figure
    is the lab's rather than this process's wait for a core."""
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    run_promptly()
    try:
        yield
    finally:
        os.sched_setscheduler(0, *before)


# ---------------------------------------------------------------- command line

def _link(text: str) -> tuple[frozenset[str], float]:
    try:
        pair, rtt = text.split("=")
        a, b = pair.split(",")
        return frozenset((a.strip(), b.strip())), float(rtt)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A,B=RTT_MS (e.g. node-1,node-2=150), got {text!r}") from None


def _spans(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(a), int(b)) for a, b in (span.split(":") for span in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B,B:C,… (e.g. 0:10,10:20,20:30), got {text!r}") from None


def _hosts(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]


def _nat(args: argparse.Namespace) -> dict[str, str]:
    """--nat and --symmetric-nat as the lab's {host: kind}."""
    kinds = {host: "cone" for hosts in args.nat for host in hosts}
    for host in (h for hosts in args.symmetric_nat for h in hosts):
        if host in kinds:
            raise LabError(f"{host} is named by both --nat and --symmetric-nat: pick one")
        kinds[host] = "symmetric"
    return kinds


def _shape_options(p: argparse.ArgumentParser, rtt: float, mbit: float) -> None:
    p.add_argument("--rtt-ms", type=float, default=rtt, help=f"round trip between any two hosts (default {rtt:g})")
    p.add_argument("--mbit", type=float, default=mbit, help=f"each host's upload bandwidth (default {mbit:g})")
    p.add_argument("--jitter-ms", type=float, default=0.0,
                   help="each direction's delay wanders within +-this, packets stay in order (default 0)")
    p.add_argument("--name", help="lab name, [a-z0-9]{1,16}; namespaces are swarmlm-wan-NAME-HOST (default: random)")
    p.add_argument("--nat", type=_hosts, action="append", default=[], metavar="HOST[,HOST]",
                   help="put these hosts behind a home router each (masquerading NAT that keeps ports)")
    p.add_argument("--symmetric-nat", type=_hosts, action="append", default=[], metavar="HOST[,HOST]",
                   help="the same with a fresh random port for every connection (symmetric NAT)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="a lab with a swarm in it, until Ctrl-C",
                        description="Start a lab, a bootstrap peer and N nodes (one per host), print how to run a "
                                    "client inside it, and wait for Ctrl-C; then remove everything.")
    up.add_argument("--nodes", type=int, default=3, help="node processes (default 3)")
    _shape_options(up, rtt=50, mbit=100)
    up.add_argument("--link", type=_link, action="append", default=[], metavar="A,B=RTT_MS",
                    help="a different RTT between two hosts (repeatable); hosts are bootstrap, node-1…N, client")
    up.add_argument("--spans", type=_spans, help="blocks per node, e.g. 0:20,10:30, one node each "
                                                 "(default: --nodes even spans)")
    up.add_argument("--model", default="smollm2-135m-instruct", help="store folder or catalogued name")
    up.add_argument("--state-dir", type=Path, help="node identities, ledgers and logs (default: a temporary folder)")
    check = sub.add_parser("selfcheck", help="measure a two-host lab (a, b) and exit (1 when off by more than 10%%); "
                                             "with --nat, prove the NAT too")
    _shape_options(check, rtt=40, mbit=50)
    sub.add_parser("down", help="remove namespaces and processes of labs whose harness crashed")
    return ap


def _up(args: argparse.Namespace) -> int:
    from shards.catalog import resolve_model
    from shards.store import ShardStore

    store = ShardStore(resolve_model(args.model))
    spans = args.spans
    nodes = len(spans) if spans else args.nodes
    if nodes < 1:
        raise LabError(f"--nodes must be at least 1, got {nodes}")
    with WanLab(swarm_hosts(nodes), args.rtt_ms, args.mbit, args.jitter_ms, dict(args.link), name=args.name,
                nat=_nat(args)) as lab, tempfile.TemporaryDirectory(prefix="wanlab-") as tmp:
        _print_checks(lab)
        state_dir = args.state_dir or Path(tmp)
        log.info("starting the bootstrap peer and %d nodes (logs in %s)", nodes, state_dir)
        with LocalSwarm(str(store.path), state_dir, placement=lab) as swarm:
            if spans:
                swarm.start_spans(spans)
            else:
                swarm.start(nodes, store.manifest.num_blocks)
            for node in swarm.nodes:
                print(f"{node.name} {lab.address(node.name)} blocks {node.blocks[0]}:{node.blocks[1]} "
                      f"peer {node.peer_id}", flush=True)
            client = lab.wrap(CLIENT, [*SWARMLM, "generate", "--model", str(store.path), "--peers",
                                       *swarm.initial_peers, "What is the capital of France?"])
            print(f"initial peer {swarm.initial_peers[0]}\nclient: {shlex.join(client)}\n"
                  f"lab {lab.name} is up; Ctrl-C removes it", flush=True)
            try:
                while lab.running:
                    time.sleep(1)
            except KeyboardInterrupt:
                log.info("stopping the nodes and the bootstrap peer (they drain first), then lab %s", lab.name)
                return 130
            raise LabError(f"the forwarder of lab {lab.name} exited; the lab is gone")


def _selfcheck(args: argparse.Namespace) -> int:
    with WanLab(["a", "b"], args.rtt_ms, args.mbit, args.jitter_ms, name=args.name, nat=_nat(args)) as lab:
        _print_checks(lab)
    return 0


def _print_checks(lab: WanLab) -> None:
    for check in lab.checks:
        print(f"self-check {check}", flush=True)
    for nat_check in lab.nat_checks:
        print(f"nat-check {nat_check}", flush=True)


def _down(_: argparse.Namespace) -> int:
    removed = netns.remove_leftovers()
    print(f"removed lab {', '.join(removed)}" if removed else "no leftovers")
    return 0


def _stop_on_sigterm(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # tear down as on Ctrl-C
    try:
        return {"up": _up, "selfcheck": _selfcheck, "down": _down}[args.command](args)
    except SelfCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (LabError, NodeError, ShardsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
