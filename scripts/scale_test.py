"""Dozens of real node processes on one machine, joining and dying in waves, checked against what the
simulator (scripts/swarmsim) assumes of the DHT, placement and clients.

A synthetic model of many thin blocks (scripts/synthetic_model.py, preset `thin`: 48 blocks of hidden
64) lets 30+ nodes with `--blocks auto` fit in a few GiB. The nodes join in concurrent groups, then each
wave kills a share of them (half crash with SIGKILL, half leave politely with SIGTERM) while as many
newcomers join; the last wave also kills every server of the least-served block, so coverage has a
hole that joiners and rebalancing must fill. A client keeps generating through the SDK all along.

Checked, as the simulator's invariants (its tests assert them for simulated swarms):
  - coverage is restored after every wave: every block is served by a live node that announces it
    online in the DHT, within `--settle` seconds;
  - no client generation fails while the live nodes cover the model (a failure during which some
    sample of coverage showed a block with no live server is the client's documented NoRouteError,
    counted apart);
  - the nodes' total memory stays under `--max-rss` (proportional set size: shared pages counted once).

    python scripts/scale_test.py --nodes 32 --waves 3          # prints progress, then a summary
    python scripts/scale_test.py --nodes 8 --waves 1 --json    # the short form its test runs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.errors import NodeError  # noqa: E402
from node.forkserver import kill_group  # noqa: E402
from node.local_swarm import LocalNode, LocalSwarm  # noqa: E402
from routing import dht as dht_io  # noqa: E402
from routing.client import SwarmClient  # noqa: E402
from routing.records import ServerRecord  # noqa: E402
from shards.store import ShardStore  # noqa: E402

SYNTHETIC = Path(__file__).resolve().parent / "synthetic_model.py"
GIB = 2 ** 30
# Node flags that keep 30+ nodes light on 2 shared cores: one compute thread, a small KV pool,
# a fixed announced speed (no start-up benchmark), and no witnessing of peers' ledgers.
LIGHT_NODE = ("--threads", "1", "--cache-tokens", "1024", "--throughput", "100",
              "--witness-period", "100000", "--ledger", "off")
# Fewer malloc arenas; p2pd (Go) on one thread. Not GOMEMLIMIT=32MiB, which this test set before: each
# p2pd's heap (~60 MiB resident) sat above it, so Go collected garbage without pause, and 30 daemons at
# ~6% of a core each held the load average at 40-100 (DHT reads timed out, joiners read no coverage).
LEAN_ENV = {"MALLOC_ARENA_MAX": "2", "GOMAXPROCS": "1"}


def swarm_processes(leaders: list[int]) -> Iterator[tuple[Path, int, str, list[str]]]:
    """(/proc entry, session, command name, stat fields after the name) of this process, its children
    (the client's p2pd daemons), and everything in these sessions (each node leads one: its DHT process
    and p2pd stay in it)."""
    sessions, me = set(leaders), os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) in sessions or me in (int(entry.name), int(fields[1])):
            yield entry, int(fields[3]), stat[stat.index("(") + 1:stat.rindex(")")], fields


def memory(leaders: list[int]) -> tuple[int, int]:
    """(summed RSS, summed PSS) in bytes of the swarm's processes (`swarm_processes`)."""
    rss = pss = 0
    for entry, _, _, _ in swarm_processes(leaders):
        try:
            for line in (entry / "smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return rss, pss


def cpu_seconds(leaders: list[int]) -> dict[int, dict[str, float]]:
    """CPU seconds (user + system) each node has used so far, by session leader and part: `node` (the
    daemon), `dht` (its hivemind DHT process), `p2pd`."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[int, dict[str, float]] = {}
    for entry, session, name, fields in swarm_processes(leaders):
        if session in leaders:
            part = "p2pd" if name.startswith("p2pd") else "node" if int(entry.name) == session else "dht"
            parts = used.setdefault(session, {})
            parts[part] = parts.get(part, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def covered(records: dict[str, ServerRecord], alive: set[str], num_blocks: int) -> list[int]:
    """Live servers per block, from the DHT's online records of peers whose process is alive."""
    counts = [0] * num_blocks
    for r in records.values():
        if r.state == "online" and r.peer_id in alive:
            for b in range(max(0, r.start), min(num_blocks, r.end)):
                counts[b] += 1
    return counts


@dataclass
class ClientLog:
    ok: int = 0
    tokens: int = 0
    failed_with_cover: list[str] = field(default_factory=list)
    failed_uncovered: list[str] = field(default_factory=list)


class Scale:
    def __init__(self, args: argparse.Namespace, store: ShardStore, state: Path) -> None:
        self.args, self.store, self.n = args, store, store.manifest.num_blocks
        self.rng = random.Random(args.seed)
        self.swarm = LocalSwarm(str(store.path), state, announce_period=args.announce_period,
                                node_args=["--num-blocks", str(args.blocks_per_node),
                                           "--rebalance-period", str(args.rebalance_period), *LIGHT_NODE],
                                ready_timeout=args.ready_timeout, env=dict(os.environ, **LEAN_ENV))
        self.began = time.monotonic()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.serving = threading.Event()  # the client has generated once
        self.log = ClientLog()
        self.peak_rss = self.peak_pss = 0
        self.waves: list[dict] = []
        self.started = 0
        self.failed_starts = 0  # joiners that exited before they were ready
        self.observer: SwarmClient | None = None
        self.holes: list[float] = []  # when a coverage sample had a block with no live server
        self.join_s = 0.0  # seconds until every first node was up and the model covered
        self.idle: dict[str, float] = {}  # idle_cpu's figures

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {text}", flush=True)

    def alive(self) -> set[str]:
        with self.lock:
            nodes = list(self.swarm.nodes)
        return {n.peer_id for n in nodes if n.process is not None and n.process.poll() is None}

    def records(self) -> dict[str, ServerRecord]:
        """The DHT's records as a client reads them; a read that times out is asked again with a deadline
        four times as long (thirty nodes on two loaded cores answer slowly; a dead DHT times out twice)."""
        assert self.observer is not None
        for timeout in (dht_io.DHT_TIMEOUT, 4 * dht_io.DHT_TIMEOUT):
            try:
                return self.observer.run(dht_io.fetch_records(self.observer.dht, self.store.root, self.n,
                                                              timeout=timeout), timeout=timeout + 30)
            except dht_io.DHTTimeout:
                if timeout > dht_io.DHT_TIMEOUT:
                    raise
                self.say("observer: a DHT read timed out; reading again, patiently")
        raise AssertionError("unreachable")

    def coverage(self) -> list[int]:
        """Live servers per block now; a sample with a hole is remembered (`holes`)."""
        records = self.records()
        counts = covered(records, self.alive(), self.n)
        if min(counts) == 0:
            self.holes.append(time.monotonic())
        return counts

    def uncovered_during(self, began: float) -> bool:
        """Whether some block had no live server between `began` and now, as far as sampled (after
        every kill, every joining group and every `--poll` s while a wave settles, and now)."""
        now_hole = min(self.coverage()) == 0
        return now_hole or any(t >= began for t in self.holes)

    def sample_memory(self) -> None:
        with self.lock:
            pids = [n.pid for n in [*self.swarm.nodes, self.swarm.bootstrap] if n is not None]
        rss, pss = memory(pids)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        if pss > self.args.max_rss * GIB:
            raise SystemExit(f"memory {pss / GIB:.1f} GiB over --max-rss {self.args.max_rss} GiB: stopping")

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """Share of a core each idle node uses over `seconds` with no client (mean per node of its daemon,
        DHT process and p2pd, the busiest node's total, and the machine's load average at the end)."""
        with self.lock:
            leaders = [n.pid for n in self.swarm.nodes]
        before = cpu_seconds(leaders)
        time.sleep(seconds)
        after = cpu_seconds(leaders)
        spent = {pid: {part: used - before[pid].get(part, 0.0) for part, used in parts.items()}
                 for pid, parts in after.items() if pid in before}
        share = {part: sum(p.get(part, 0.0) for p in spent.values()) / seconds / max(1, len(spent))
                 for part in ("node", "dht", "p2pd")}
        share["total"] = sum(share.values())
        share["busiest"] = max((sum(p.values()) for p in spent.values()), default=0.0) / seconds
        share["load"] = os.getloadavg()[0]
        self.say(f"idle: {len(spent)} nodes use {100 * share['total']:.2f}% of a core each over {seconds:.0f} s "
                 f"(daemon {100 * share['node']:.2f}%, DHT {100 * share['dht']:.2f}%, p2pd {100 * share['p2pd']:.2f}%;"
                 f" busiest {100 * share['busiest']:.2f}%), load average {share['load']:.1f}")
        return share

    def join(self, count: int) -> list[LocalNode]:
        """Start `count` nodes in groups of `--join-group` started together (a group's members do not
        see each other's records when they choose their blocks, as simultaneous volunteers would not)."""
        joined: list[LocalNode] = []
        while len(joined) < count:
            group = [self.swarm.spawn_node(wait=False) for _ in range(min(self.args.join_group, count - len(joined)))]
            try:
                self.swarm.await_nodes(group)
            except NodeError as e:  # on a loaded machine a node's DHT may not answer within its start-up limit
                self.failed_starts += 1
                self.say(f"a joiner failed to start ({str(e).splitlines()[0]}); starting another")
                if self.failed_starts > self.args.max_failed_starts:
                    raise
            ready = [n for n in group if n in self.swarm.nodes]
            joined += ready
            self.started += len(ready)
            self.sample_memory()
            self.coverage()
            self.say(f"joined {len(joined)}/{count}: blocks " + " ".join(f"{a}:{b}" for a, b in
                                                                         (n.blocks for n in ready)))
        return joined

    def kill(self, victims: list[LocalNode]) -> None:
        for i, node in enumerate(victims):
            polite = i % 2 == 1
            with self.lock:
                if polite:
                    node.process.send_signal(signal.SIGTERM)  # drains, then leaves (reaped in settle)
                else:
                    self.swarm.kill(node, signal.SIGKILL)
        self.say(f"killed {len(victims)} ({(len(victims) + 1) // 2} crashed, {len(victims) // 2} left politely)")
        self.coverage()

    def reap(self) -> None:
        """Forget nodes whose process has exited (the polite leavers), reaping their process groups."""
        with self.lock:
            for node in [n for n in self.swarm.nodes if n.process is not None and n.process.poll() is not None]:
                self.swarm.kill(node)
                kill_group(node.process)

    def settle(self, since: float) -> tuple[float | None, list[int]]:
        """Wait (at most --settle s) until every block has a live, announced server; the seconds it took."""
        deadline = time.monotonic() + self.args.settle
        counts = [0] * self.n
        while time.monotonic() < deadline:
            self.reap()
            counts = self.coverage()
            self.sample_memory()
            if min(counts) > 0:
                return time.monotonic() - since, counts
            holes = [b for b, c in enumerate(counts) if c == 0]
            self.say(f"{len(self.alive())} nodes, {len(holes)} blocks unserved ({holes[:8]}…), waiting")
            time.sleep(self.args.poll)
        return None, counts

    def client(self) -> None:
        """Generate greedily, again and again, until told to stop; classify each failure by coverage."""
        from swarmlm.sdk import RemoteModel

        model = None
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                model = model or RemoteModel.connect(self.swarm.initial_peers, self.store.path, verify=False)
                result = model.generate("The swarm", max_new_tokens=self.args.tokens, raw=True, ignore_eos=True)
                self.log.ok += 1
                self.log.tokens += len(result.token_ids)
                self.serving.set()
            except Exception as e:  # noqa: BLE001 - every failure is counted and classified
                what = f"{type(e).__name__}: {e}"[:200]
                try:
                    full = not self.uncovered_during(began - self.args.announce_period)  # records lag a period
                except Exception:  # noqa: BLE001
                    full = True  # cannot tell: count it against us
                (self.log.failed_with_cover if full else self.log.failed_uncovered).append(what)
                self.say(f"client: generation failed ({'covered' if full else 'uncovered'}): {what}")
                time.sleep(1)
        if model is not None:
            model.close()

    def run(self) -> dict:
        a = self.args
        self.swarm.start(0, self.n)
        self.swarm.threads = 1
        self.observer = SwarmClient(self.swarm.initial_peers, request_timeout=30)
        self.say(f"bootstrap up; starting {a.nodes} nodes of {a.blocks_per_node} blocks over {self.n} blocks")
        self.join(a.nodes)
        took, counts = self.settle(time.monotonic())
        self.say(f"initial coverage: servers per block min {min(counts)} max {max(counts)}")
        self.join_s = time.monotonic() - self.began
        if a.idle_window > 0:
            self.idle = self.idle_cpu(a.idle_window)
        worker = threading.Thread(target=self.client, daemon=True)
        worker.start()
        if not self.serving.wait(timeout=a.settle):
            raise SystemExit(f"the client generated nothing in {a.settle:.0f}s on a covered swarm")
        self.say("client generating")
        for wave in range(a.waves):
            time.sleep(a.pause)
            with self.lock:
                live = [n for n in self.swarm.nodes if n.process.poll() is None]
            victims = self.rng.sample(live, max(1, round(a.kill_fraction * len(live))))
            if wave == a.waves - 1:  # a hole: every server of the least-served block goes too
                counts = self.coverage()
                weakest = min(range(self.n), key=lambda b: counts[b])
                records = self.records()
                serving = {p for p, r in records.items() if r.start <= weakest < r.end}
                victims += [n for n in live if n.peer_id in serving and n not in victims]
            began = time.monotonic()
            self.say(f"wave {wave + 1}/{a.waves}: killing {len(victims)} of {len(live)}")
            self.kill(victims)
            self.join(len(victims))
            took, counts = self.settle(began)
            self.waves.append({"killed": len(victims), "joined": len(victims), "restored_s": took,
                               "min_servers": min(counts), "max_servers": max(counts)})
            self.say(f"wave {wave + 1}: coverage {'restored in %.0fs' % took if took is not None else 'NOT restored'}"
                     f", servers per block {min(counts)}..{max(counts)}, client {self.log.ok} ok")
        time.sleep(a.pause)
        self.stop.set()
        worker.join(timeout=120)
        return self.summary(not worker.is_alive())

    def summary(self, client_stopped: bool) -> dict:
        restored = all(w["restored_s"] is not None for w in self.waves)
        return {"nodes": self.args.nodes, "blocks": self.n, "blocks_per_node": self.args.blocks_per_node,
                "waves": self.waves, "joined_s": self.join_s, "idle_cpu": self.idle, "started": self.started, "failed_starts": self.failed_starts,
                "peak_rss_gib": self.peak_rss / GIB,
                "peak_pss_gib": self.peak_pss / GIB, "client_generations": self.log.ok,
                "client_tokens": self.log.tokens, "failed_with_cover": self.log.failed_with_cover,
                "failed_uncovered": self.log.failed_uncovered, "client_stopped": client_stopped,
                "seconds": time.monotonic() - self.began,
                "passed": restored and not self.log.failed_with_cover and self.log.ok > 0 and client_stopped}

    def close(self) -> None:
        self.stop.set()
        if self.observer is not None:
            self.observer.close()
        self.swarm.stop()


def synthetic_store(work: Path) -> ShardStore:
    out = work / "thin-model"
    if not (out / "manifest.json").exists():
        subprocess.run([sys.executable, str(SYNTHETIC), "--out", str(out), "--preset", "thin"], check=True,
                       stdout=subprocess.DEVNULL)
    return ShardStore(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--waves", type=int, default=3)
    ap.add_argument("--kill-fraction", type=float, default=0.3, help="share of live nodes each wave kills")
    ap.add_argument("--blocks-per-node", type=int, default=8)
    ap.add_argument("--join-group", type=int, default=4, help="nodes started together")
    # the daemon's own periods: at 10 s and 15 s, 32 nodes' reads of the 48 block keys kept DHT reads timing out
    ap.add_argument("--announce-period", type=float, default=30.0)
    ap.add_argument("--rebalance-period", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=300.0, help="seconds a wave's coverage may take to return")
    ap.add_argument("--idle-window", type=float, default=60.0,
                    help="seconds over which the idle nodes' CPU is measured once they cover the model (0: not)")
    ap.add_argument("--poll", type=float, default=5.0,
                    help="seconds between coverage reads while a wave settles (a read asks ~20 peers for each of the 48 "
                         "block keys; at 2 s the observer read more often than 32 nodes' rebalancing checks)")
    ap.add_argument("--pause", type=float, default=10.0, help="seconds of steady serving around the waves")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per client generation")
    ap.add_argument("--ready-timeout", type=float, default=300.0)
    ap.add_argument("--max-failed-starts", type=int, default=5,
                    help="joiners that may fail to start before the run stops")
    ap.add_argument("--max-rss", type=float, default=12.0, help="GiB the swarm may use before the run stops")
    ap.add_argument("--model", type=Path, help="a packed store (default: the thin synthetic model, packed once)")
    ap.add_argument("--work", type=Path, help="folder for the model and node state (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = args.work or Path(tmp)
        store = ShardStore(args.model) if args.model else synthetic_store(work)
        scale = Scale(args, store, work / f"swarm-{os.getpid()}")
        try:
            result = scale.run()
        finally:
            scale.close()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"\n{result['nodes']} nodes ({result['started']} started in all, {result['failed_starts']} failed to "
              f"start) over {result['blocks']} blocks, "
              f"{len(result['waves'])} waves, {result['seconds']:.0f} s")
        for i, w in enumerate(result["waves"], 1):
            restored = f"{w['restored_s']:.0f} s" if w["restored_s"] is not None else "never"
            print(f"  wave {i}: killed {w['killed']}, joined {w['joined']}, coverage restored in {restored}, "
                  f"servers per block {w['min_servers']}..{w['max_servers']}")
        print(f"  joined and covered in {result['joined_s']:.0f} s")
        if result["idle_cpu"]:
            print(f"  idle CPU per node: {100 * result['idle_cpu']['total']:.2f}% of a core "
                  f"(busiest {100 * result['idle_cpu']['busiest']:.2f}%)")
        print(f"  memory peak: {result['peak_pss_gib']:.2f} GiB PSS ({result['peak_rss_gib']:.2f} GiB summed RSS)")
        print(f"  client: {result['client_generations']} generations, {result['client_tokens']} tokens; failed "
              f"with cover {len(result['failed_with_cover'])}, while uncovered {len(result['failed_uncovered'])}")
        print("PASSED" if result["passed"] else "FAILED")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
