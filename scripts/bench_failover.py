"""Failover cost, measured side by side in one run.

A 3-node chain plus a spare for the middle blocks. Each round generates the same greedy answer
twice: once undisturbed, once SIGKILLing the chain's middle node after a few tokens (a spare is
started again before the next round). Prints the recovery time (from the kill to the next token,
which includes noticing the failure, re-planning, opening a session on the spare and replaying
the history) and the total generation time with one failure vs none.

    python scripts/bench_failover.py [--tokens 48] [--kill-after 8] [--rounds 3]
"""

from __future__ import annotations

import logging
import signal
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import PROMPT, bench_parser
from node.local_swarm import LocalSwarm
from shards.catalog import resolve_model
from shards.manifest import Manifest
from swarmlm.sdk import RemoteModel

def timed_generation(model: RemoteModel, swarm: LocalSwarm, tokens: int, kill_after: int | None
                     ) -> tuple[float, float | None, list[int]]:
    """(total seconds, seconds from the kill to the next token or None, token ids)."""
    ids: list[int] = []
    killed_at: float | None = None
    recovery: float | None = None
    started = time.perf_counter()
    with model.inference_session(max_length=256) as session:
        for event in session.stream(PROMPT, tokens, ignore_eos=True):
            if event.token_id is None:
                continue
            now = time.perf_counter()
            if killed_at is not None and recovery is None:
                recovery = now - killed_at
            ids.append(event.token_id)
            if kill_after is not None and len(ids) == kill_after:
                victim = next(s.peer for s in session.runner.spans if s.hop.start == 10)
                killed_at = time.perf_counter()
                swarm.kill(next(n for n in swarm.nodes if n.peer_id == victim), signal.SIGKILL)
    return time.perf_counter() - started, recovery, ids


def main() -> int:
    ap = bench_parser(__doc__, tokens=48, repeats=None)
    ap.add_argument("--kill-after", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = resolve_model(args.model)
    clean, failed, recoveries = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp, LocalSwarm(str(store), Path(tmp)) as swarm:
        swarm.start(3, Manifest.load(store).num_blocks)
        with RemoteModel.connect(swarm.initial_peers, store) as model:
            timed_generation(model, swarm, 4, None)  # warm-up
            for r in range(args.rounds):
                swarm.spawn_node((10, 20))
                total, _, reference = timed_generation(model, swarm, args.tokens, None)
                clean.append(total)
                total, recovery, ids = timed_generation(model, swarm, args.tokens, args.kill_after)
                failed.append(total)
                recoveries.append(recovery or 0.0)
                print(f"round {r + 1}: no failure {clean[-1]:.2f}s, one failure {failed[-1]:.2f}s, recovery "
                      f"{recoveries[-1] * 1000:.0f} ms, tokens equal: {ids == reference}", flush=True)
    print(f"\n{args.tokens} tokens, node killed after {args.kill_after} (medians of {args.rounds})")
    print(f"recovery (kill -> next token)   {statistics.median(recoveries) * 1000:7.0f} ms")
    print(f"generation without failure      {statistics.median(clean):7.2f} s")
    print(f"generation with one failure     {statistics.median(failed):7.2f} s")
    print(f"ratio failure/no failure        {statistics.median(failed) / statistics.median(clean):7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
