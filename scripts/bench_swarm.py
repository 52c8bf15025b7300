"""Swarm vs local generation, measured side by side in one run.

Starts a local swarm of real node processes (3 by default) on 127.0.0.1, then alternates local
and swarm generation of the same prompt (greedy, exactly N new tokens) and prints tokens/s and
time to first token for both, and their ratio.

    python scripts/bench_swarm.py [--nodes 3] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from node.local_swarm import LocalSwarm  # noqa: E402
from shards.catalog import DEFAULT_MODEL, resolve_model  # noqa: E402
from shards.local import LocalModel  # noqa: E402
from swarmlm.sdk import RemoteModel  # noqa: E402

PROMPT = "What is the capital of France?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", default=PROMPT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    store = resolve_model(args.model)
    local = LocalModel.load(store)
    with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp, LocalSwarm(str(store), Path(tmp)) as swarm:
        print(f"starting {args.nodes} nodes…", flush=True)
        swarm.start(args.nodes, local.store.manifest.num_blocks)
        with RemoteModel.connect(swarm.initial_peers, store) as remote:
            runs: dict[str, list[tuple[float, float]]] = {"local": [], "swarm": []}
            for model in (local, remote):  # warm-up: caches, connections
                model.generate(args.prompt, 4, ignore_eos=True)
            for r in range(args.repeats):
                for name, model in (("local", local), ("swarm", remote)):
                    g = model.generate(args.prompt, args.tokens, ignore_eos=True)
                    runs[name].append((g.tokens_per_second, g.time_to_first_token))
                    print(f"run {r + 1} {name:5}: {g.tokens_per_second:6.1f} tok/s, "
                          f"first token {g.time_to_first_token * 1000:6.0f} ms", flush=True)
    tps = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
    ttft = {k: statistics.median(f for _, f in v) for k, v in runs.items()}
    print(f"\n{args.tokens} new tokens, greedy, float32, {args.nodes} nodes on 127.0.0.1 (medians of {args.repeats})")
    print(f"local            {tps['local']:7.1f} tok/s   first token {ttft['local'] * 1000:6.0f} ms")
    print(f"swarm            {tps['swarm']:7.1f} tok/s   first token {ttft['swarm'] * 1000:6.0f} ms")
    print(f"ratio swarm/local {tps['swarm'] / tps['local']:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
