"""Simulate a volunteer swarm with the production policies and compare placements with the bound.

    python scripts/swarmsim.py --scenario hetero-200 --hours 1

prints, per placement policy: delivered tokens/s over the linear-program bound of the nodes present
(their compute, uplinks and KV caches: scripts/swarmsim/bound.py), block-seconds with no server, failed
sessions, time per token (p50/p95) and joules per token, and
writes PNGs to --out: throughput.png (delivered and the bound over time), coverage.png (servers per
block over time) and latency_cdf.png (time per token per policy).

    python scripts/swarmsim.py --scenario hetero-200 --hours 0.1 --rate 0 --clients 3600 --grow-cache

runs the swarm saturated (closed-loop clients, more than it serves), so tokens/s is the policy's capacity;
with --gap it also shows, per kind of hardware, what the nodes carry beside what the batched bound gives them.

    python scripts/swarmsim.py --calibrate

prints the simulator's predictions of this project's measured runs beside the measurements
(scripts/swarmsim/calibrate.py) and exits 1 if a claimed case is off by more than 15%.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the production packages

from swarmsim import calibrate, gap, plots  # noqa: E402
from swarmsim.engine import PLACEMENTS, Simulation  # noqa: E402
from swarmsim.scenarios import SCENARIOS  # noqa: E402

COLUMNS = (("placement", "{}"), ("offered/s", "{:.0f}"), ("tokens/s", "{:.1f}"), ("bound", "{:.1f}"), ("of bound", "{:.2f}"),
           ("best bound", "{:.1f}"), ("batched", "{:.1f}"), ("of batched", "{:.2f}"),
           ("uncovered blk·s", "{:.0f}"), ("sessions", "{}"), ("failed", "{}"),
           ("failed w/ cover", "{}"), ("failovers", "{}"), ("moves", "{}"), ("announces", "{}"), ("tpt p50 s", "{:.3f}"),
           ("tpt p95 s", "{:.3f}"), ("ttft p50 s", "{:.2f}"), ("J/token", "{:.1f}"), ("wall s", "{:.0f}"),
           ("cpu s", "{:.0f}"))
RING_HEADERS = {"": "", "every": " (rings where they close)", "whole": " (rings where they close: whole-model nodes, alone)"}
KEYS = ("offered_s", "tokens_s", "bound_s", "of_bound", "best_bound_s", "batched_s", "of_batched", "uncovered_block_s", "sessions", "failed",
        "failed_with_cover", "failovers", "moves", "announces", "tpt_p50", "tpt_p95", "ttft_p50", "j_per_token", "wall_s", "cpu_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="hetero-200")
    parser.add_argument("--hours", type=float, help="simulated hours (default: the scenario's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, help="client sessions per second (default: the scenario's)")
    parser.add_argument("--clients", type=int, default=0,
                        help="also this many closed-loop clients, each opening a session when its last one ends: "
                             "with enough of them the swarm is saturated and tokens/s is its capacity")
    parser.add_argument("--placement", choices=PLACEMENTS, action="append", help="default: all")
    parser.add_argument("--push", action=argparse.BooleanOptionalAction, default=True,
                        help="plan and run pushed chains, node to node, as the SDK does by default (nodes announce "
                             "their next-block round trips); --no-push: relayed, each hop a round trip to the client")
    parser.add_argument("--ring", nargs="?", const="every", choices=["every", "whole"],
                        help="volunteers run --ring (the embeddings and LM head out of their memory): every one, or "
                             "only those whose memory holds every block beside the head (`--ring whole`: every "
                             "volunteer runs --ring auto, and those ring alone); every client asks for rings; a chain that closes a ring (routing/ring.py) decodes as one, the client off its "
                             "path; the bounds leave the client out of chains from or to a ring node (pushed only)")
    parser.add_argument("--no-claims", action="store_true",
                        help="rebalance as before moves were claimed (to measure herding: --scenario herd)")
    parser.add_argument("--grow-cache", action="store_true",
                        help="nodes give sessions all the KV cache their memory holds beside their blocks "
                             "(node/selection.py cache_tokens_for_budget), not just the configured pool")
    parser.add_argument("--spans-for-pool", action="store_true",
                        help="with --grow-cache, nodes size their spans for the configured pool only, as before, not "
                             "for node/selection.py's GROWN_RESERVE_TOKENS (more blocks a node, fewer sessions)")
    parser.add_argument("--routing", choices=("room", "before"), default="room",
                        help="room: clients plan around nodes announcing too little free cache for the session and "
                             "a full node is avoided briefly, not banned with backoff; before: neither")
    parser.add_argument("--no-batch-figures", action="store_true",
                        help="nodes announce only one session's tokens/s, not a batch's too, so clients price a "
                             "node with l sessions at (1 + l) times its single step, as before")
    parser.add_argument("--periodic-announce", action="store_true",
                        help="nodes announce only every period, as before, not also when their load moves "
                             "(node/freshness.py)")
    parser.add_argument("--measured-batch", type=int, default=0,
                        help="the batch nodes measure their batched tokens/s at (default: what their pool holds "
                             "of mean-length sessions)")
    parser.add_argument("--priced-uplinks", action=argparse.BooleanOptionalAction, default=True,
                        help="volunteers give their upload speed (--upload-mbps), folded into the tokens/s they "
                             "announce (node/uplink.py), so clients price their uplinks; --no-priced-uplinks: "
                             "compute only, as before")
    parser.add_argument("--gap", action="store_true",
                        help="after each run, where its throughput falls short of the batched bound: per kind of "
                             "hardware, what the nodes carry beside what the bound's program gives them, what binds "
                             "them, and where a token's time goes (scripts/swarmsim/gap.py; run it saturated)")
    parser.add_argument("--out", type=Path, default=Path("swarmsim-out"),
                        help="folder for the PNGs (default %(default)s)")
    parser.add_argument("--no-plots", action="store_true", help="the table only")
    parser.add_argument("--calibrate", action="store_true",
                        help="predicted vs measured runs of this project, then exit")
    args = parser.parse_args()
    if args.ring and not args.push:
        parser.error("--ring needs pushed chains: a ring is a pushed chain closed by its last node")
    if args.calibrate:
        lines, ok = calibrate.table()
        print("\n".join(lines))
        print(f"* not one of the issue's cases. Every claimed case within {calibrate.TARGET:.0%}: "
              f"{'yes' if ok else 'NO'}")
        raise SystemExit(0 if ok else 1)
    rows, runs, gaps = [], {}, []
    for placement in args.placement or PLACEMENTS:
        cfg = SCENARIOS[args.scenario]()
        cfg = dataclasses.replace(cfg, placement=placement, seed=args.seed, push=args.push, claims=not args.no_claims,
                                  room_rule=args.routing == "room", batch_figures=not args.no_batch_figures,
                                  measured_batch=args.measured_batch, eager_announce=not args.periodic_announce,
                                  hours=args.hours if args.hours is not None else cfg.hours,
                                  client_rate=args.rate if args.rate is not None else cfg.client_rate,
                                  clients=args.clients, grow_cache=args.grow_cache,
                                  grown_reserve=not args.spans_for_pool, priced_uplinks=args.priced_uplinks,
                                  ring=args.ring or "")
        began, cpu = time.perf_counter(), time.process_time()
        sim = Simulation(cfg)
        result = sim.run()
        result["wall_s"], result["cpu_s"] = time.perf_counter() - began, time.process_time() - cpu  # one core
        runs[placement] = sim.metrics
        if args.gap:
            gaps += [f"{placement}, at the end of the run:", *gap.table(sim)]
        rows.append([placement] + [result[k] for k in KEYS])
        print(f"{placement}: done in {result['wall_s']:.0f}s", file=sys.stderr)
    cells = [[fmt.format(v) for (_, fmt), v in zip(COLUMNS, row)] for row in rows]
    widths = [max(len(name), *(len(r[i]) for r in cells)) for i, (name, _) in enumerate(COLUMNS)]
    print(f"scenario {args.scenario}, {cfg.model.name}, {cfg.nodes} volunteers, {cfg.hours:g} h, seed {args.seed}, "
          f"{'pushed' if args.push else 'relayed'} chains{RING_HEADERS[args.ring or '']}, "
          f"{cfg.client_rate:g} sessions/s, "
          f"moves {'unclaimed (the rule before claims)' if args.no_claims else 'claimed'}, routing {args.routing}"
          f"{', single-stream figures only' if args.no_batch_figures else ''}"
          f"{', announced every period only' if args.periodic_announce else ''}"
          f"{', grown pools' + (' in spans sized for the pool' if args.spans_for_pool else '') if args.grow_cache else ''}"
          f"{f', batches measured at {args.measured_batch}' if args.measured_batch else ''}"
          f"{'' if args.priced_uplinks else ', uplinks unpriced'}")
    print("  ".join(name.rjust(w) for (name, _), w in zip(COLUMNS, widths)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    for line in gaps:
        print(line)
    if not args.no_plots:
        paths = plots.write_pngs(runs, args.out, f"{args.scenario}, {cfg.hours:g} h")
        print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
