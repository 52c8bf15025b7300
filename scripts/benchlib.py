"""Shared by the benchmarks: run contenders alternately on the same work and take medians.

Alternating (A, B, A, B, …) rather than (A, A, …, B, B, …) spreads this machine's drift over
both sides, so the ratio printed is a fair side-by-side figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shards.catalog import DEFAULT_MODEL  # noqa: E402
from shards.generation import Generation  # noqa: E402

PROMPT = "What is the capital of France?"


def bench_parser(doc: str | None, tokens: int = 64, repeats: int | None = 5) -> argparse.ArgumentParser:
    """The flags every generation benchmark takes: the model, new tokens, and timed rounds (when it alternates)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"store folder or catalogued name (default {DEFAULT_MODEL})")
    ap.add_argument("--tokens", type=int, default=tokens, help=f"new tokens per generation (default {tokens})")
    if repeats is not None:
        ap.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds (default {repeats})")
    return ap


def wan_bench_parser(doc: str | None, rtts: list[float], repeats: int) -> argparse.ArgumentParser:
    """bench_parser plus what a benchmark through the WAN lab varies: round trips, nodes, bandwidth."""
    ap = bench_parser(doc, repeats=repeats)
    ap.add_argument("--rtts", type=lambda text: [float(x) for x in text.split(",")], default=rtts,
                    help=f"round trips in ms on every link, one lab each (default {','.join(f'{r:g}' for r in rtts)})")
    ap.add_argument("--nodes", type=int, default=3, help="nodes splitting the blocks evenly (default 3)")
    ap.add_argument("--mbit", type=float, default=100, help="each host's upload bandwidth (default 100)")
    ap.add_argument("--node-threads", type=int, default=os.cpu_count() or 1,
                    help="compute threads per node (default: every core, as on a volunteer's own machine; one "
                         "client's chain computes on one node at a time)")
    return ap


def alternate(contenders: dict[str, Callable[[], Generation]], repeats: int) -> dict[str, list[Generation]]:
    """Each contender once per round, `repeats` rounds (after one untimed warm-up round)."""
    for run in contenders.values():
        run()
    results: dict[str, list[Generation]] = {name: [] for name in contenders}
    for r in range(repeats):
        for name, run in contenders.items():
            g = run()
            results[name].append(g)
            print(f"run {r + 1} {name:<12} {g.tokens_per_second:6.1f} tok/s  first token "
                  f"{g.time_to_first_token * 1000:5.0f} ms", file=sys.stderr, flush=True)
    return results


def median_tps(runs: list[Generation]) -> float:
    return statistics.median(g.tokens_per_second for g in runs)


def median_ttft(runs: list[Generation]) -> float:
    return statistics.median(g.time_to_first_token for g in runs)


def percentile(values: list[float], p: int) -> float:
    """The p-th percentile (1..99) of `values`; the value itself for fewer than two."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[p - 1]
