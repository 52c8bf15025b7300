"""Speculative decoding over emulated internet links, against none, measured side by side in one run.

For each round trip (0 and 50 ms on every link by default) a WAN lab of its own holds a bootstrap
peer, 3 nodes splitting the blocks evenly and a client (scripts/wan_client.py), which generates
through pushed chains. On two fixed prompt sets — repetitive (edit, correct, continue code,
extract, summarise: the answer copies its input) and free chat — it alternates, greedy, up to N new
tokens (the answers are the same token for token whoever drafts):
  off      no speculation
  lookup   drafts copied from the context (prompt lookup), up to K a trip, k adapted every trip
  target   the target model drafting for itself on the client: every draft is kept, the most tokens
           a trip can bring (its drafting time counts, so it need not be the fastest)
Prints, per set: tokens/s over the whole set, tokens per trip (accepted drafts plus the target's
own token), the ratio to `off`, and the lowest ratio of any one prompt of the set (on free chat
adaptive k must keep that near 1).

    python scripts/bench_spec.py [--rtts 0,50] [--max-draft 6] [--tokens 64] [--repeats 3] [--mbit 100]
"""

from __future__ import annotations

import logging
import statistics
from typing import Any, Callable

from benchlib import alternate, median_tps, wan_bench_parser
from shards.generation import Generation
from wan_client import WanClient, clients_per_rtt

REPETITIVE = [
    "Rewrite the following paragraph, replacing every 'cat' with 'dog' and changing nothing else:\n\n"
    "The cat sat by the window every morning. When the sun rose, the cat stretched, yawned and watched the "
    "birds in the garden. Our neighbours often said the cat was the calmest animal on the street, and the cat "
    "seemed to agree.",
    "Correct the spelling mistakes in this text and return the corrected text:\n\n"
    "Yesterday we went to the libary to borrow some books about the histroy of Europe. The librarian was very "
    "helpfull and showed us where the bookshelfs with maps and old newspapers were.",
    "Continue this Python code with subtract, multiply and divide methods written in the same style:\n\n"
    "class Calculator:\n"
    "    def add(self, a: float, b: float) -> float:\n"
    "        \"\"\"Return a plus b.\"\"\"\n"
    "        return a + b\n",
    "From the following meeting notes, list every person with their role and task, one per line:\n\n"
    "Alice Martin (project manager) will send the schedule to the team by Friday. Bob Chen (backend developer) "
    "will fix the login bug. Carla Diaz (designer) will prepare the new landing page. David Okafor (tester) will "
    "write test cases for the payment flow.",
    "Summarise this text in two sentences, keeping its wording where you can:\n\n"
    "The city council approved a new plan to build bicycle lanes on the main streets of the city centre. The "
    "bicycle lanes will be separated from the car traffic by low walls. The council expects the new bicycle "
    "lanes to be finished by the end of next year, and it hopes that more people will ride bicycles to work.",
]
CHAT = [
    "What are three tips for staying healthy?",
    "Write a short poem about autumn leaves.",
    "Explain to a child why the sky is blue.",
    "What should I cook for dinner tonight?",
    "Tell me a fun fact about octopuses.",
]
SETS = {"repetitive": REPETITIVE, "chat": CHAT}


def over_set(client: WanClient, prompts: list[str], tokens: int, **options: Any) -> Callable[[], Generation]:
    """A contender that generates every prompt of a set once."""
    return lambda: combined([client.generate(p, tokens, **options) for p in prompts])


def over_sets(client: WanClient, contenders: dict[str, dict[str, Any]], tokens: int, repeats: int,
              **common: Any) -> dict[str, dict[str, list[Generation]]]:
    """Per prompt set, its contenders (generation options each, plus `common`) alternated `repeats` rounds."""
    return {name: alternate({c: over_set(client, prompts, tokens, **common, **options)
                             for c, options in contenders.items()}, repeats)
            for name, prompts in SETS.items()}


def combined(runs: list[Generation]) -> Generation:
    """A set's runs as one generation: its tokens over its total time; trips summed (without
    speculation a trip is a token); each run kept in `extra["runs"]`."""
    trips = emitted = 0
    for g in runs:
        spec = g.extra.get("speculation")
        trips += spec["trips"] if spec else len(g.token_ids)
        emitted += spec["trips"] + spec["accepted"] if spec else len(g.token_ids)
    return Generation("", [t for g in runs for t in g.token_ids], "length", sum(g.prompt_tokens for g in runs),
                      statistics.median(g.time_to_first_token for g in runs), sum(g.total_time for g in runs),
                      {"runs": runs, "tokens_per_trip": emitted / max(1, trips)})


def worst_prompt_ratio(runs: list[Generation], off: list[Generation]) -> float:
    """The lowest, over a set's prompts, of the prompt's median tokens/s against its median without speculation."""
    def per_prompt(rounds: list[Generation]) -> list[float]:
        return [statistics.median(r.extra["runs"][i].tokens_per_second for r in rounds)
                for i in range(len(rounds[0].extra["runs"]))]
    return min(s / o for s, o in zip(per_prompt(runs), per_prompt(off)))


def main() -> int:
    ap = wan_bench_parser(__doc__, rtts=[0, 50], repeats=3)
    ap.add_argument("--max-draft", type=int, default=6, help="most drafted tokens per trip (default 6)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    contenders = {"off": {}, "lookup": {"speculative": args.max_draft},
                  "target": {"speculative": args.max_draft, "drafter": "target"}}
    for rtt, client in clients_per_rtt(args.model, args.rtts, args.nodes, args.mbit, args.node_threads):
        results = over_sets(client, contenders, args.tokens, args.repeats)
        print(f"RTT {rtt:g} ms: {args.nodes} nodes, pushed, greedy, up to {args.tokens} new tokens, max draft "
              f"{args.max_draft}, {len(REPETITIVE)}+{len(CHAT)} prompts (medians of {args.repeats})")
        print("  set         contender  tok/s  tokens/trip  ratio  worst prompt")
        for name, runs in results.items():
            off = median_tps(runs["off"])
            for c in contenders:
                per_trip = statistics.median(g.extra["tokens_per_trip"] for g in runs[c])
                worst = f"{worst_prompt_ratio(runs[c], runs['off']):5.2f}x" if c != "off" else ""
                print(f"  {name:<11} {c:<9} {median_tps(runs[c]):6.1f}  {per_trip:11.2f}  "
                      f"{median_tps(runs[c]) / off:4.2f}x  {worst:>12}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
