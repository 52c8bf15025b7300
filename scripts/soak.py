"""Soak test: a 3-node local swarm under 8 concurrent clients for a set time, watching for leaks.

Clients share one RemoteModel (it owns one background event loop; each generation opens its own
sessions) and loop: stream a bounded generation, record when each token arrives, repeat. At the
end it reports completed generations, errors by type, per-token step latency (p50/p95 of the gaps
between consecutive tokens, prefill excluded) and each node's resident memory: the sum over its
process group (the node, its DHT child, p2pd).

Memory is compared from a baseline taken once every client has finished one generation (caches,
allocator pools and lazy imports are warm by then) to the end; growth beyond
`MEMORY_GROWTH_FACTOR` x baseline + `MEMORY_GROWTH_SLACK_MIB` fails the run, as do any error, a
node that died, or a client that did not stop. Exit status 1 on failure.

    python scripts/soak.py [--duration 600] [--clients 8] [--max-new-tokens 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchlib import percentile
from node.local_swarm import LocalNode, LocalSwarm
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.store import ShardStore
from swarmlm.sdk import RemoteModel

MAX_DURATION = 3600.0
MEMORY_GROWTH_FACTOR = 1.2
MEMORY_GROWTH_SLACK_MIB = 50.0
MIB = 1024 * 1024
PROMPTS = ("What is the capital of France?", "Name three primary colours.", "Write a haiku about the sea.",
           "How many legs does a spider have?", "Give me a synonym for happy.", "What is 12 times 7?")


@dataclass
class Results:
    """What the client threads record; one lock guards it all (appends are rare next to a token's time)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: int = 0
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive tokens of one generation
    first_token: list[float] = field(default_factory=list)  # seconds from request to first token
    errors: Counter = field(default_factory=Counter)
    first_error: dict[str, str] = field(default_factory=dict)
    warm_clients: set[int] = field(default_factory=set)


def client_loop(index: int, model: RemoteModel, deadline: float, max_new_tokens: int, results: Results) -> None:
    """Generate until the deadline; an error is counted, then the loop goes on after a short pause."""
    i = index
    while time.monotonic() < deadline:
        prompt = PROMPTS[i % len(PROMPTS)]
        i += 1
        started = time.perf_counter()
        stamps: list[float] = []
        try:
            for event in model.stream(prompt, max_new_tokens, ignore_eos=True):
                if event.token_id is not None:
                    stamps.append(time.perf_counter())
        except Exception as e:  # a soak counts failures rather than stopping at the first
            with results.lock:
                name = type(e).__name__
                results.errors[name] += 1
                results.first_error.setdefault(name, str(e))
            time.sleep(1.0)
            continue
        with results.lock:
            results.completed += 1
            results.tokens += len(stamps)
            if stamps:
                results.first_token.append(stamps[0] - started)
            results.gaps.extend(b - a for a, b in zip(stamps, stamps[1:]))
            results.warm_clients.add(index)


def group_rss(node: LocalNode) -> int:
    """Resident bytes of every live process in the node's process group (it leads its own session)."""
    total = 0
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == node.pid:
                total += proc.memory_info().rss
        except (psutil.Error, ProcessLookupError):
            continue
    return total


def run(args: argparse.Namespace) -> dict:
    store = ShardStore(resolve_model(args.model))
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        state = Path(args.state_dir or tmp)
        with LocalSwarm(str(store.path), state) as swarm:
            swarm.start(args.nodes, store.manifest.num_blocks)
            nodes = list(swarm.nodes)
            at_ready = {n.name: group_rss(n) for n in nodes}
            with RemoteModel.connect(swarm.initial_peers, store.path, identity=state / "client" / "identity.key",
                                     ledger=state / "client" / "ledger.sqlite") as model:
                return soak(args, model, nodes, at_ready)


def soak(args: argparse.Namespace, model: RemoteModel, nodes: list[LocalNode], at_ready: dict[str, int]) -> dict:
    results = Results()
    started = time.monotonic()
    deadline = started + args.duration
    threads = [threading.Thread(target=client_loop, args=(i, model, deadline, args.max_new_tokens, results),
                                name=f"soak-client-{i}", daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    baseline: dict[str, int] | None = None
    peak = dict(at_ready)
    while any(t.is_alive() for t in threads):
        time.sleep(2.0)
        rss = {n.name: group_rss(n) for n in nodes}
        peak = {k: max(peak[k], rss[k]) for k in peak}
        with results.lock:
            warm = len(results.warm_clients) == args.clients
        if baseline is None and warm:
            baseline = rss
        if time.monotonic() > deadline + args.stop_grace:
            break
    elapsed = time.monotonic() - started
    stuck = [t.name for t in threads if t.is_alive()]
    end = {n.name: group_rss(n) for n in nodes}
    dead = [n.name for n in nodes if n.process is not None and n.process.poll() is not None]
    baseline = baseline or end  # no client ever finished: nothing to compare, the errors say why
    memory = {n.name: {"ready_mib": at_ready[n.name] / MIB, "start_mib": baseline[n.name] / MIB,
                       "peak_mib": peak[n.name] / MIB, "end_mib": end[n.name] / MIB,
                       "limit_mib": baseline[n.name] / MIB * MEMORY_GROWTH_FACTOR + MEMORY_GROWTH_SLACK_MIB}
              for n in nodes}
    problems = [f"{name} grew beyond its memory bound" for name, m in memory.items() if m["end_mib"] > m["limit_mib"]]
    problems += [f"{name} died" for name in dead] + [f"{name} did not stop" for name in stuck]
    if sum(results.errors.values()) > args.max_errors:
        problems.append(f"{sum(results.errors.values())} errors (more than --max-errors {args.max_errors})")
    if not results.completed:
        problems.append("no generation completed")
    return {"duration_s": round(elapsed, 1), "clients": args.clients, "nodes": len(nodes),
            "max_new_tokens": args.max_new_tokens, "completed": results.completed, "tokens": results.tokens,
            "tokens_per_s": round(results.tokens / elapsed, 2), "errors": dict(results.errors),
            "first_error": results.first_error,
            "step_latency_ms": {"p50": round(percentile(results.gaps, 50) * 1000, 1),
                                "p95": round(percentile(results.gaps, 95) * 1000, 1), "samples": len(results.gaps)},
            "first_token_ms": {"p50": round(percentile(results.first_token, 50) * 1000, 1),
                               "p95": round(percentile(results.first_token, 95) * 1000, 1)},
            "memory_bound": f"end <= {MEMORY_GROWTH_FACTOR} x start + {MEMORY_GROWTH_SLACK_MIB:.0f} MiB "
                            "(start: once every client finished one generation)",
            "memory": {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in memory.items()},
            "problems": problems}


def print_report(report: dict) -> None:
    lat, ttft = report["step_latency_ms"], report["first_token_ms"]
    print(f"soak: {report['nodes']} nodes, {report['clients']} clients, {report['duration_s']} s, "
          f"max_new_tokens {report['max_new_tokens']}")
    print(f"completed generations {report['completed']}  tokens {report['tokens']} "
          f"({report['tokens_per_s']} tok/s over all clients)")
    print(f"errors {sum(report['errors'].values())}" + "".join(
        f"\n  {name} x{count}: {report['first_error'][name]}" for name, count in report["errors"].items()))
    print(f"step latency p50 {lat['p50']} ms  p95 {lat['p95']} ms  ({lat['samples']} gaps)   "
          f"first token p50 {ttft['p50']} ms  p95 {ttft['p95']} ms")
    print(f"memory ({report['memory_bound']}):")
    for name, m in report["memory"].items():
        print(f"  {name}: ready {m['ready_mib']} MiB, start {m['start_mib']}, peak {m['peak_mib']}, "
              f"end {m['end_mib']} (limit {m['limit_mib']})")
    print("FAIL: " + "; ".join(report["problems"]) if report["problems"] else "OK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help=f"seconds to generate (max {MAX_DURATION:.0f})")
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32, help="tokens per generation (EOS ignored)")
    ap.add_argument("--max-errors", type=int, default=0, help="errors tolerated before the run fails")
    ap.add_argument("--stop-grace", type=float, default=120.0,
                    help="seconds past the deadline a client may take to finish its generation")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--state-dir", type=Path, help="keep the swarm's state and logs here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = ap.parse_args()
    if not 0 < args.duration <= MAX_DURATION:
        ap.error(f"--duration must be in (0, {MAX_DURATION:.0f}] seconds")
    if args.clients < 1 or args.max_new_tokens < 1:
        ap.error("--clients and --max-new-tokens must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
