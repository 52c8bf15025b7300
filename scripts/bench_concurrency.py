"""Many sessions at once: cross-session batching on vs off, node-side and end to end, side by side.

Starts two local 3-node swarms of the model — one batching steps of different sessions into one
forward, one computing them one at a time (`--no-batching`) — and for each number of concurrent
sessions alternates between them:
  node-side   a load generator sends hidden states straight into the chain, whose nodes push them
              along (no LM head, so the two cores are spent on the nodes): each session a 32-token
              prefill, then one-token steps;
  end to end  real SDK generations (greedy, EOS ignored) from one client process.
It prints aggregate decode tokens/s and p50/p95 time per token, and the ratios the scheduler is
judged by: aggregate at 8 sessions over 1 session, and p95 at 8 sessions over a lone session.

    python scripts/bench_concurrency.py [--sessions 1 2 4 8 16] [--tokens 32] [--repeats 2]
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchlib import bench_parser, percentile
from node.local_swarm import LocalSwarm
from routing.client import SwarmClient
from routing.planner import plan_route
from routing.span import SpanSession
from shards.catalog import resolve_model
from shards.store import ShardStore
from swarmlm.sdk import RemoteModel

PROMPTS = ("What is the capital of France?", "Name three primary colours.", "Write a haiku about the sea.",
           "How many legs does a spider have?", "Give me a synonym for happy.", "What is 12 times 7?",
           "Explain photosynthesis in one sentence.", "List four fruits.")
PREFILL = 32


@dataclass
class Run:
    """One measurement: every session's per-token gaps and the decode phase's wall time."""

    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


async def node_side(client: SwarmClient, root: str, num_blocks: int, hidden: int, sessions: int, tokens: int
                    ) -> Run:
    """`sessions` concurrent sessions sending hidden states into the chain, which pushes them along."""
    records = await client.records(root, num_blocks)
    client.learn(records.values())
    hops = plan_route(records.values(), 0, num_blocks, push=True)
    starts, ends, run = [], [], Run()

    async def step(spans: list[SpanSession], h: torch.Tensor, start: int) -> None:
        await spans[0].send_step(h, start, push=True)
        for span in spans:  # each node's copy, the last one's output being the step's result
            h, _ = await span.result(h.to(span.send_dtype), start)

    async def one() -> list[float]:
        sid = secrets.token_hex(8)
        spans = [SpanSession(client, hop, root, sid, PREFILL + tokens + 1, torch.float32, identity=client.identity,
                             attest=False, prev=hops[k - 1].peer_id if k else None,
                             next_hop=hops[k + 1] if k + 1 < len(hops) else None) for k, hop in enumerate(hops)]
        for s in spans:
            await s.open()
        await step(spans, torch.randn(1, PREFILL, hidden), 0)
        gaps, x = [], torch.randn(1, 1, hidden)
        starts.append(time.perf_counter())
        for t in range(tokens):
            began = time.perf_counter()
            await step(spans, x, PREFILL + t)
            gaps.append(time.perf_counter() - began)
        ends.append(time.perf_counter())
        for s in spans:
            await s.close()
        return gaps

    for gaps in await asyncio.gather(*(one() for _ in range(sessions))):
        run.gaps += gaps
        run.tokens += len(gaps)
    run.wall = max(ends) - min(starts)
    return run


def end_to_end(model: RemoteModel, sessions: int, tokens: int) -> Run:
    """`sessions` SDK generations at once, each on its own thread; per-token gaps from the stream."""
    run, lock = Run(), threading.Lock()
    spans: list[tuple[float, float]] = []

    def one(i: int) -> None:
        stamps = [time.perf_counter() for e in model.stream(PROMPTS[i % len(PROMPTS)], tokens, ignore_eos=True)
                  if e.token_id is not None]
        with lock:
            run.gaps += [b - a for a, b in zip(stamps, stamps[1:])]
            run.tokens += len(stamps) - 1
            spans.append((stamps[0], stamps[-1]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return run


def summary(runs: list[Run]) -> tuple[float, float, float]:
    """Median aggregate tokens/s, and p50/p95 per-token ms over every run's gaps."""
    gaps = [g for r in runs for g in r.gaps]
    return (statistics.median(r.tokens_per_second for r in runs), percentile(gaps, 50) * 1000,
            percentile(gaps, 95) * 1000)


def main() -> int:
    ap = bench_parser(__doc__, tokens=32, repeats=2)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = ShardStore(resolve_model(args.model))
    n, hidden = store.manifest.num_blocks, store.manifest.config.hidden_size
    results: dict[tuple[str, str, int], list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp, \
            LocalSwarm(str(store.path), Path(tmp) / "on") as on, \
            LocalSwarm(str(store.path), Path(tmp) / "off", node_args=["--no-batching"]) as off:
        on.start(3, n)
        off.start(3, n)
        swarms = {"on": on, "off": off}
        clients = {k: SwarmClient(s.initial_peers) for k, s in swarms.items()}
        models = {k: RemoteModel.connect(s.initial_peers, store.path, verify=False) for k, s in swarms.items()}
        try:
            for k in swarms:  # warm-up: first sessions pay for imports, allocations and stream set-up
                clients[k].run(node_side(clients[k], store.root, n, hidden, 2, 4))
                end_to_end(models[k], 2, 4)
            for sessions in args.sessions:
                for r in range(args.repeats):
                    for kind in ("node-side", "end-to-end"):
                        for k in ("on", "off"):
                            if kind == "node-side":
                                run = clients[k].run(node_side(clients[k], store.root, n, hidden, sessions,
                                                               args.tokens))
                            else:
                                run = end_to_end(models[k], sessions, args.tokens)
                            results.setdefault((kind, k, sessions), []).append(run)
                            print(f"{kind:<10} batching {k:<3} {sessions:>2} sessions  "
                                  f"{run.tokens_per_second:6.1f} tok/s", flush=True)
        finally:
            for m in models.values():
                m.close()
            for c in clients.values():
                c.close()
    report(results, args)
    return 0


def report(results: dict[tuple[str, str, int], list[Run]], args) -> None:  # noqa: ANN001
    print(f"\n3 nodes x 10 blocks, 1 thread each, float32, {args.tokens} decode tokens per session, "
          f"medians of {args.repeats}")
    print(f"{'':<11}{'sessions':>8} | {'batching on: tok/s  p50  p95 ms':>32} | {'off: tok/s  p50  p95 ms':>25}")
    for kind in ("node-side", "end-to-end"):
        for sessions in args.sessions:
            cells = [summary(results[(kind, k, sessions)]) for k in ("on", "off")]
            print(f"{kind:<11}{sessions:>8} | {cells[0][0]:>14.1f} {cells[0][1]:>7.0f} {cells[0][2]:>6.0f}    | "
                  f"{cells[1][0]:>9.1f} {cells[1][1]:>6.0f} {cells[1][2]:>6.0f}")
    for kind in ("node-side", "end-to-end"):
        if 1 in args.sessions and 8 in args.sessions:
            one, eight = summary(results[(kind, "on", 1)]), summary(results[(kind, "on", 8)])
            off8 = summary(results[(kind, "off", 8)])
            print(f"{kind}: aggregate at 8 sessions / 1 session {eight[0] / one[0]:.2f}x (batching on), "
                  f"p95 at 8 / lone {eight[2] / one[2]:.2f}x; batching on / off at 8 sessions "
                  f"{eight[0] / off8[0]:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
