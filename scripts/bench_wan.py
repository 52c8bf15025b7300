"""Pushed vs relayed hops over emulated internet links, measured side by side in one run.

For each round trip (0, 20, 50 and 100 ms on every link by default) a WAN lab of its own holds a
bootstrap peer, 3 nodes splitting the blocks evenly and a client (scripts/wan_client.py). The
client connects once per mode and alternates pushed generations (node to node, one trip through
the chain) with relayed ones (a round trip through the client per node) of the same prompt,
greedy, exactly N new tokens. Prints tokens/s and time to first token medians, the pushed/relayed
ratio per RTT, and where a median run's time went (waiting on nodes, their compute, checks, the
client's own work).

    python scripts/bench_wan.py [--rtts 0,20,50,100] [--nodes 3] [--tokens 64] [--repeats 5] [--mbit 100]
"""

from __future__ import annotations

import logging

from benchlib import PROMPT, alternate, median_tps, median_ttft, wan_bench_parser
from shards.generation import Generation
from wan_client import clients_per_rtt, time_breakdown

MODES = {"relayed": False, "pushed": True}


def median_run(runs: list[Generation]) -> Generation:
    """The run whose tokens/s is the median (the lower middle one for an even count)."""
    return sorted(runs, key=lambda g: g.tokens_per_second)[(len(runs) - 1) // 2]


def main() -> int:
    ap = wan_bench_parser(__doc__, rtts=[0, 20, 50, 100], repeats=5)
    ap.add_argument("--prompt", default=PROMPT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    summary = []
    for rtt, client in clients_per_rtt(args.model, args.rtts, args.nodes, args.mbit, args.node_threads):
        runs = alternate({mode: (lambda push=push: client.generate(args.prompt, args.tokens, push=push,
                                                                    ignore_eos=True))
                          for mode, push in MODES.items()}, args.repeats)
        ratio = median_tps(runs["pushed"]) / median_tps(runs["relayed"])
        summary.append((rtt, runs, ratio))
        print(f"RTT {rtt:g} ms: {args.tokens} new tokens, greedy, {args.nodes} nodes, {args.mbit:g} Mbit/s "
              f"(medians of {args.repeats})")
        for mode, push in MODES.items():
            fallbacks = sum(g.extra["relayed_steps"] for g in runs[mode])
            print(f"  {mode:<8} {median_tps(runs[mode]):6.1f} tok/s   first token {median_ttft(runs[mode]) * 1000:6.0f} ms"
                  + (f"   pushed steps that fell back to relaying: {fallbacks}" if push else ""))
            print(f"           {time_breakdown(median_run(runs[mode]))}")
        print(f"  ratio pushed/relayed {ratio:.2f}x", flush=True)
    print("\nRTT ms  relayed tok/s  pushed tok/s  ratio  relayed TTFT ms  pushed TTFT ms")
    for rtt, runs, ratio in summary:
        print(f"{rtt:6g}  {median_tps(runs['relayed']):13.1f}  {median_tps(runs['pushed']):12.1f}  {ratio:4.2f}x  "
              f"{median_ttft(runs['relayed']) * 1000:15.0f}  {median_ttft(runs['pushed']) * 1000:14.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
