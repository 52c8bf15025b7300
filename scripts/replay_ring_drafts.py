"""Replay the ring sampler's drafting decisions on bench_spec's prompts without a swarm: what each
answer would cost under a fixed ring-trip model, to tell rejected drafts from measurement noise.

Each prompt's 32-token local greedy answer is the truth; at every ring step the sampler proposes
drafts from the text so far, the replay keeps those equal to the answer (greedy acceptance) and
charges one trip of F(n) = base + per_draft * (n - 1) seconds. Policies, one client over both sets
in bench_ring's order:
  plain  no drafts (plain ring)
  fresh  one draft-length model per answer, every step decaying acceptance (the sampler before
         it kept a memory per client)
  memory node/ring.py's RingDrafting: a DraftMemory per client, acceptance per match length

    python scripts/replay_ring_drafts.py [--tokens 32]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Sequence

from bench_spec import SETS
from shards.catalog import resolve_model
from shards.drafting import PromptLookupDrafter
from shards.generation import encode_prompt
from shards.local import LocalModel
from shards.speculative import AdaptiveDraftLength
from shards.store import ShardStore

from node.ring import MAX_MATCH, MIN_MATCH, DraftMemory, RingDrafting

COSTS = {"50 ms": (0.190, 0.010), "0 ms": (0.090, 0.012)}  # ring trip and each drafted position (bench_ring)
Propose = Callable[[Sequence[int], int], list[int]]
Returned = Callable[[int, int, int, float], None]


def replay(prompt: list[int], answer: list[int], cost: Callable[[int], float], propose: Propose,
           returned: Returned) -> tuple[float, int]:
    """Seconds per token after the first, and positions drafted, for one answer."""
    context, at, total, drafted = [*prompt, answer[0]], 1, 0.0, 0
    while at < len(answer):
        drafts = propose(context, len(answer) - at - 1)
        kept = next((i for i, (d, t) in enumerate(zip(drafts, answer[at:])) if d != t), len(drafts))
        kept = min(kept, len(answer) - at - 1)
        seconds = cost(1 + len(drafts))
        total, drafted = total + seconds, drafted + len(drafts)
        returned(1 + len(drafts), len(drafts), kept, seconds)
        context += answer[at:at + kept + 1]
        at += kept + 1
    return total / (len(answer) - 1), drafted


def fresh(max_draft: int) -> tuple[Propose, Returned]:
    length, lookup = AdaptiveDraftLength(max_draft), PromptLookupDrafter(MIN_MATCH, MAX_MATCH)

    def propose(context: Sequence[int], limit: int) -> list[int]:
        k = length.choose(limit)
        return lookup.match(context, k)[1] if k else []

    def returned(positions: int, drafts: int, kept: int, seconds: float) -> None:
        length.record_forward(positions, seconds)
        length.record_trip(drafts, kept)
    return propose, returned


def remembered(memory: DraftMemory) -> tuple[Propose, Returned]:
    drafting = RingDrafting(memory)

    def returned(positions: int, drafts: int, kept: int, seconds: float) -> None:
        drafting.sent_at = time.perf_counter() - seconds
        drafting.returned(positions, drafts, kept)
    return drafting.propose, returned


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--max-draft", type=int, default=4)
    args = ap.parse_args()
    model = LocalModel.load(ShardStore(resolve_model(args.model)))
    answers = {name: [(ids, model.generate(ids, args.tokens, ignore_eos=True).token_ids)
                      for ids in (encode_prompt(model.tokenizer, p) for p in prompts)]
               for name, prompts in SETS.items()}
    print("RTT    policy  set         ms/token  worst prompt vs plain  drafted")
    for rtt, (base, per_draft) in COSTS.items():
        def cost(n: int) -> float:
            return base + per_draft * (n - 1)
        memory = DraftMemory(args.max_draft, sampled=False)
        for policy in ("plain", "fresh", "memory"):
            for name, pairs in answers.items():
                runs = [(cost(1), 0) if policy == "plain" else
                        replay(ids, out, cost, *(fresh(args.max_draft) if policy == "fresh" else remembered(memory)))
                        for ids, out in pairs]
                per_token = [r[0] for r in runs]
                print(f"{rtt:<6} {policy:<7} {name:<11} {1000 * sum(per_token) / len(runs):8.1f}  "
                      f"{cost(1) / max(per_token):20.2f}x  {sum(r[1] for r in runs):7d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
