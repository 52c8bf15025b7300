"""Ring mode against pushed and relayed hops over emulated internet links, side by side in one run.

For each round trip (0, 20, 50 and 100 ms on every link by default) a WAN lab of its own holds a
bootstrap peer, 3 `--ring` nodes splitting the blocks evenly and a client (scripts/wan_client.py).
On bench_spec's two prompt sets (repetitive, free chat) it alternates, greedy, up to N new tokens
(the answers are the same token for token in every mode):
  relayed  the client carries every hop (a round trip per node)
  pushed   nodes push to the next node; the last returns the hidden state, the client samples
  ring     the last node samples and sends the token to the first; the client checks off the path
  ring+spec  the ring with speculation: the last node also drafts by prompt lookup (on matches of 2
           tokens or more, as many as pay off) and judges the drafts when they come back around
Prints, per set: tokens/s over the set, median first-token time, the ratio to pushed, the lowest
ratio of any one prompt (to pushed; for ring+spec also to plain ring), tokens per trip, ring
restarts (a ring restarts once per answer unless a token differed), and where a median answer's
time went.

    python scripts/bench_ring.py [--rtts 0,20,50,100] [--tokens 64] [--repeats 3] [--mbit 100] [--max-draft 4]
"""

from __future__ import annotations

import logging
import statistics

from bench_spec import SETS, over_sets, worst_prompt_ratio
from benchlib import median_tps, wan_bench_parser
from shards.generation import Generation
from wan_client import clients_per_rtt, time_breakdown



def contenders(max_draft: int) -> dict[str, dict[str, object]]:
    return {"relayed": {"push": False}, "pushed": {"push": True}, "ring": {"ring": True},
            "ring+spec": {"ring": True, "speculative": max_draft}}


def median_answer(rounds: list[Generation]) -> Generation:
    """The answer whose tokens/s is the median over every answer of every round."""
    answers = sorted((g for r in rounds for g in r.extra["runs"]), key=lambda g: g.tokens_per_second)
    return answers[(len(answers) - 1) // 2]


def restarts(rounds: list[Generation]) -> str:
    counts = [g.extra["ring"]["restarts"] for r in rounds for g in r.extra["runs"] if "ring" in g.extra]
    return f"{sum(counts)}/{len(counts)}" if counts else ""


def main() -> int:
    ap = wan_bench_parser(__doc__, rtts=[0, 20, 50, 100], repeats=3)
    ap.add_argument("--max-draft", type=int, default=4, help="ring+spec: most drafted tokens per trip (default 4)")
    ap.add_argument("--only", default="", help="comma-separated contenders to run (default: all; pushed always)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    chosen = {c: o for c, o in contenders(args.max_draft).items()
              if not args.only or c == "pushed" or c in args.only.split(",")}

    for rtt, client in clients_per_rtt(args.model, args.rtts, args.nodes, args.mbit, args.node_threads,
                                       node_args=["--ring"]):
        results = over_sets(client, chosen, args.tokens, args.repeats, ignore_eos=True)
        print(f"RTT {rtt:g} ms: {args.nodes} nodes, greedy, {args.tokens} new tokens, "
              f"{sum(map(len, SETS.values()))} prompts (medians of {args.repeats})")
        print("  set         mode       tok/s  first token ms  vs pushed  worst prompt  worst vs ring  tok/trip"
              "  ring restarts/answers")
        for name, runs in results.items():
            pushed = median_tps(runs["pushed"])
            for c in chosen:
                ttft = statistics.median(g.time_to_first_token for r in runs[c] for g in r.extra["runs"]) * 1000
                worst = f"{worst_prompt_ratio(runs[c], runs['pushed']):5.2f}x" if c != "pushed" else ""
                vs_ring = f"{worst_prompt_ratio(runs[c], runs['ring']):5.2f}x" if c == "ring+spec" and "ring" in runs \
                    else ""
                trip = statistics.median(r.extra["tokens_per_trip"] for r in runs[c])
                tps = median_tps(runs[c])
                print(f"  {name:<11} {c:<9} {tps:6.1f}  {ttft:14.0f}  {tps / pushed:8.2f}x  {worst:>12}  {vs_ring:>13}"
                      f"  {trip:8.2f}  {restarts(runs[c]):>21}")
                print(f"              {time_breakdown(median_answer(runs[c]))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
