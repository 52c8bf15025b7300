"""Nodes at home in the chain: tokens/s and first-token time with 0, 1 and 3 private nodes, and what
their relays pay.

One WAN lab, every link 50 ms by default: the bootstrap peer and three more relay peers (bootstrap
peers serving no blocks: relay-1..3), three public nodes (node-1..3 over blocks 0:10, 10:20, 20:30)
and three nodes at home behind NAT over the same spans (node-4..6, the four relays as their initial
peers), every node with --no-relay-service so every circuit runs through the four relays. The client
pins each chain by avoiding the other nodes: 0 private (node-1, 2, 3: every hop direct), 1 private
(node-1, 5, 3) and 3 private (node-4, 5, 6: every hop through a relay), each pushed (node to node)
and relayed through the client, alternated, greedy, exactly N new tokens. This p2pd has no hole
punching (no DCUtR switch), so a connection to a node at home stays relayed.

A relay's cost is read around every timed run: CPU seconds of the relays' p2pd (/proc/PID/stat) and
the bytes their relay service forwarded (p2pd's own counter, `libp2p_relaysvc_data_transferred_bytes`),
per relayed stream (one per private node in the chain: the client's circuit, or a predecessor's).
Also printed: the round trip the client measured to each node (through its relay for one at home).

    sudo python scripts/bench_nat.py [--rtt 50] [--tokens 32] [--repeats 3] [--mbit 100]
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchlib import PROMPT, alternate, bench_parser, median_tps, median_ttft
from wan_client import WanClient
from wanlab import WanLab, swarm_hosts

from node.local_swarm import LocalNode, LocalSwarm
from node.reachable import RELAY_WAIT
from routing import relay_stats
from routing.reachability import relays_of
from shards.catalog import resolve_model
from shards.generation import Generation
from shards.store import ShardStore

SPANS = [(0, 10), (10, 20), (20, 30)]
CHAINS = {"0 private": (1, 2, 3), "1 private": (1, 5, 3), "3 private": (4, 5, 6)}  # node numbers
MODES = {"pushed": True, "relayed": False}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class RelayCost:
    cpu_s: float = 0.0
    bytes: int = 0
    seconds: float = 0.0  # generation time the cost was spent over
    streams: int = 0      # relayed streams times runs
    warmed: bool = False  # the first (untimed) run connects the client: not counted


def p2pd_pid(process_group: int) -> int | None:
    """The p2pd in a relay's process group."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if stat.split("(", 1)[1].startswith("p2pd)") and int(fields[2]) == process_group:
            return int(entry.name)
    return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class Relays:
    """The relays' p2pd CPU and relayed bytes, read before and after each run."""

    def __init__(self, lab: WanLab, relays: list[LocalNode]) -> None:
        self.lab, self.relays = lab, relays
        self.pids = {r.name: p2pd_pid(r.pid) for r in relays}
        self.urls = {r.name: re.search(r"relay metrics (\S+)", Path(r.log).read_text()).group(1) for r in relays}

    def totals(self) -> tuple[float, int]:
        cpu = sum(cpu_seconds(pid) for pid in self.pids.values() if pid)
        sent = 0
        for relay in self.relays:
            done = self.lab.run(relay.name, ["curl", "-s", "--max-time", "5", self.urls[relay.name]], timeout=10)
            sent += relay_stats.parse(done.stdout).bytes
        return cpu, sent

    def measured(self, run: Callable[[], Generation], streams: int, cost: RelayCost) -> Callable[[], Generation]:
        """`run`, adding what the relays spent during it to `cost` (from the second run: the first one
        connects the client)."""
        def wrapped() -> Generation:
            if not cost.warmed:
                cost.warmed = True
                return run()
            cpu0, sent0 = self.totals()
            g = run()
            cpu1, sent1 = self.totals()
            cost.cpu_s += cpu1 - cpu0
            cost.bytes += sent1 - sent0
            cost.seconds += g.total_time
            cost.streams += streams
            return g
        return wrapped


def main() -> int:
    ap = bench_parser(__doc__, tokens=32, repeats=3)
    ap.add_argument("--rtt", type=float, default=50, help="round trip in ms on every link (default 50)")
    ap.add_argument("--mbit", type=float, default=100, help="each host's upload bandwidth (default 100)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = ShardStore(resolve_model(args.model))
    hosts = swarm_hosts(6)
    hosts[1:1] = ["relay-1", "relay-2", "relay-3"]
    homes = {f"node-{i}": "cone" for i in (4, 5, 6)}
    with tempfile.TemporaryDirectory(prefix="bench-nat-") as tmp, \
            WanLab(hosts, args.rtt, args.mbit, nat=homes) as lab, \
            LocalSwarm(str(store.path), Path(tmp), placement=lab, node_args=["--no-relay-service"],
                       ready_timeout=180 + RELAY_WAIT) as swarm:
        started = time.monotonic()
        swarm.start_spans([])
        swarm.threads = 1
        relays = [swarm.bootstrap, *(swarm.spawn_relay() for _ in range(3))]
        every_relay = [r.maddrs[0] for r in relays]
        swarm.await_nodes([swarm.spawn_node(span, wait=False) for span in SPANS]
                          + [swarm.spawn_node(span, extra=["--initial-peers", *every_relay], wait=False)
                             for span in SPANS])
        print(f"lab up, 6 nodes ready in {time.monotonic() - started:.0f} s", flush=True)
        peers = {i + 1: n.peer_id for i, n in enumerate(swarm.nodes)}
        names = {n.peer_id: n.name for n in (*relays, *swarm.nodes)}
        for home in swarm.nodes[3:]:
            print(f"{home.name} at home, circuits through "
                  f"{', '.join(names.get(r, r) for r in relays_of(home.maddrs))}", flush=True)
        meter = Relays(lab, relays)
        with WanClient(lab, swarm.initial_peers, str(store.path)) as client:
            view = client.records()
            for number, peer in peers.items():
                rtt = view["client_rtt_ms"].get(peer)
                print(f"client-measured round trip to node-{number} ({'home, relayed' if number > 3 else 'public'}): "
                      + (f"{rtt:.0f} ms" if rtt is not None else "not measured"))
            costs: dict[str, RelayCost] = {}
            contenders: dict[str, Callable[[], Generation]] = {}
            for name, numbers in CHAINS.items():
                avoid = [peer for number, peer in peers.items() if number not in numbers]
                private = sum(number > 3 for number in numbers)
                for mode, push in MODES.items():
                    key = f"{name} {mode}"
                    costs[key] = RelayCost()
                    contenders[key] = meter.measured(
                        lambda push=push, avoid=avoid: client.generate(PROMPT, args.tokens, push=push, avoid=avoid,
                                                                       ignore_eos=True),
                        private, costs[key])
            runs = alternate(contenders, args.repeats)
    print(f"\n{args.tokens} new tokens, greedy, {args.rtt:g} ms per link, {args.mbit:g} Mbit/s, medians of "
          f"{args.repeats}; relay cost summed over a row's timed runs")
    print("chain      mode     tok/s  first token ms  relayed streams  relay CPU ms/s per stream  "
          "relay kB/s per stream  relay kB per token")
    for key, gens in runs.items():
        name, mode = key.rsplit(" ", 1)
        c = costs[key]
        per_stream = c.streams / len(gens)
        cpu = f"{c.cpu_s * 1000 / c.seconds / per_stream:25.1f}" if per_stream else f"{'-':>25}"
        rate = f"{c.bytes / 1000 / c.seconds / per_stream:21.1f}" if per_stream else f"{'-':>21}"
        tokens = args.tokens * len(gens)
        print(f"{name:<10} {mode:<8} {median_tps(gens):5.1f}  {median_ttft(gens) * 1000:14.0f}  {per_stream:15.0f}  "
              f"{cpu}  {rate}  {c.bytes / 1000 / tokens:18.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
