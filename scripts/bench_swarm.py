"""Swarm vs local generation, measured side by side in one run.

Starts a local swarm of real node processes (3 by default) on 127.0.0.1, then alternates local
and swarm generation of the same prompt (greedy, exactly N new tokens) and prints tokens/s and
time to first token for both, and their ratio.

    python scripts/bench_swarm.py [--nodes 3] [--tokens 64] [--repeats 5]
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from benchlib import PROMPT, alternate, bench_parser, median_tps, median_ttft
from node.local_swarm import LocalSwarm
from shards.catalog import resolve_model
from shards.local import LocalModel
from swarmlm.sdk import RemoteModel

def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--prompt", default=PROMPT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    store = resolve_model(args.model)
    local = LocalModel.load(store)
    with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp, LocalSwarm(str(store), Path(tmp)) as swarm:
        swarm.start(args.nodes, local.store.manifest.num_blocks)
        with RemoteModel.connect(swarm.initial_peers, store) as remote:
            runs = alternate({"local": lambda: local.generate(args.prompt, args.tokens, ignore_eos=True),
                              "swarm": lambda: remote.generate(args.prompt, args.tokens, ignore_eos=True)},
                             args.repeats)
    print(f"{args.tokens} new tokens, greedy, float32, {args.nodes} nodes on 127.0.0.1 "
          f"(medians of {args.repeats})")
    for name in ("local", "swarm"):
        print(f"{name:<6} {median_tps(runs[name]):6.1f} tok/s   first token {median_ttft(runs[name]) * 1000:5.0f} ms")
    print(f"ratio swarm/local {median_tps(runs['swarm']) / median_tps(runs['local']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
