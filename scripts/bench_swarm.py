"""Swarm vs local generation, measured side by side in one run, with where the first token's time goes.

Starts a local swarm of real node processes (3 by default) on 127.0.0.1, then alternates local,
pushed-swarm and relayed-swarm generation of the same prompt (greedy, exactly N new tokens) and
prints tokens/s and time to first token for each, their ratios, and a per-phase breakdown of the
swarm's first token: planning the chain, sending the opens, waiting on each node (of which the
node reports its own compute), checking replies (digests, attestations) and the client's own work
(tokenizer, embeddings, LM head, sampling).

    python scripts/bench_swarm.py [--nodes 3] [--tokens 64] [--repeats 5]
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from pathlib import Path
from typing import Callable

from benchlib import PROMPT, alternate, bench_parser, median_tps, median_ttft
from node.local_swarm import LocalSwarm
from shards.catalog import resolve_model
from shards.generation import Generation
from shards.local import LocalModel
from swarmlm.sdk import RemoteModel

PHASES = ("plan", "open", "wait", "node", "check", "client")


def first_token_phases(model: RemoteModel, prompt: str) -> Callable[[], Generation]:
    """A one-token generation whose Generation.extra["phases"] splits its time to first token."""

    def run() -> Generation:
        with model.inference_session(max_length=256) as s:
            g = s.generate(prompt, 1)
            runner = s.runner
            spans = runner.spans
            phases = {"plan": runner.timing["plan"], "open": runner.timing["open"],
                      "wait": sum(sp.timing["wait"] for sp in spans), "node": sum(sp.timing["node"] for sp in spans),
                      "check": sum(sp.timing["check"] for sp in spans)}
        phases["client"] = g.time_to_first_token - phases["plan"] - phases["open"] - phases["wait"] - phases["check"]
        g.extra["phases"] = phases
        return g

    return run


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
        with RemoteModel.connect(swarm.initial_peers, store) as pushed, \
                RemoteModel.connect(swarm.initial_peers, store, push=False) as relayed:
            runs = alternate({"local": lambda: local.generate(args.prompt, args.tokens, ignore_eos=True),
                              "pushed": lambda: pushed.generate(args.prompt, args.tokens, ignore_eos=True),
                              "relayed": lambda: relayed.generate(args.prompt, args.tokens, ignore_eos=True)},
                             args.repeats)
            firsts = alternate({"local": lambda: local.generate(args.prompt, 1),
                                "pushed": first_token_phases(pushed, args.prompt),
                                "relayed": first_token_phases(relayed, args.prompt)}, args.repeats)
    prompt_tokens = runs["local"][0].prompt_tokens
    print(f"{args.tokens} new tokens, greedy, float32, {args.nodes} nodes on 127.0.0.1, {prompt_tokens}-token "
          f"prompt (medians of {args.repeats})")
    for name in ("local", "pushed", "relayed"):
        print(f"{name:<8} {median_tps(runs[name]):6.1f} tok/s   first token {median_ttft(firsts[name]) * 1000:5.0f} ms")
    for name in ("pushed", "relayed"):
        print(f"ratio {name}/local: tokens/s {median_tps(runs[name]) / median_tps(runs['local']):.2f}x, "
              f"first token {median_ttft(firsts[name]) / median_ttft(firsts['local']):.2f}x")
    print("first token, median ms per phase: " + "  ".join(f"{p:>6}" for p in PHASES))
    for name in ("pushed", "relayed"):
        cells = [statistics.median(g.extra["phases"][p] for g in firsts[name]) * 1000 for p in PHASES]
        print(f"  {name:<31} " + "  ".join(f"{c:6.1f}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
