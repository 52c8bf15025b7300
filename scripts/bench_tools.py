"""What tool calling costs per token: local generation of a forced call, and of text under `auto`, against
free generation of as many tokens, and the grammar's own time per token (mask and advance).

Greedy, side by side (benchlib.alternate), on a prompt that shows the tools (shards/tool_calls.py),
so only the grammar differs between contenders.

    python scripts/bench_tools.py [--model smollm2-135m-instruct] [--tokens 64] [--repeats 5]
"""

from __future__ import annotations

import torch

from bench_constrained import per_token
from benchlib import alternate, bench_parser, median_tps
from shards.catalog import resolve_model
from shards.constrained import JsonConstraint
from shards.generation import encode_prompt
from shards.local import LocalModel
from shards.tool_calls import tool_spec

CITY = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": name, "description": f"The {name[4:]} in a city", "parameters": CITY}}
         for name in ("get_weather", "get_time", "get_news", "get_events")]
ASK = [{"role": "user", "content": "What will the weather be like in Paris over the next three days?"}]


def main() -> int:
    args = bench_parser(__doc__, tokens=64).parse_args()
    model = LocalModel.load(resolve_model(args.model))
    required, auto = tool_spec(TOOLS, "required", False), tool_spec(TOOLS, "auto")
    assert required is not None and auto is not None
    ids = encode_prompt(model.tokenizer, ASK, tools=required.prompt_tools())
    call = model.generate(ids, args.tokens, tools=required)
    n = len(call.token_ids)
    print(f"forced call ({n} tokens, {call.finish_reason}): {call.tool_calls}")
    runs = alternate({"required": lambda: model.generate(ids, n, tools=required),
                      "auto": lambda: model.generate(ids, n, tools=auto),
                      "free": lambda: model.generate(ids, n, ignore_eos=True)}, args.repeats)
    free = median_tps(runs["free"])
    for name in ("required", "auto"):
        tps = median_tps(runs[name])
        print(f"local generation, {n} tokens: free {free:.1f} tok/s, {name} {tps:.1f} tok/s "
              f"({(free / tps - 1) * 100:+.1f}% time per token; answer: {runs[name][-1].text[:40]!r})")
    vocab, logits = model.head.embed_tokens.num_embeddings, torch.randn(model.head.embed_tokens.num_embeddings)
    text = model.generate(ids, n, ignore_eos=True).token_ids

    def step(c: JsonConstraint, token: int) -> None:
        c.mask(logits)
        c.accept(token)
    for label, spec, answer in [("call, required", required, call.token_ids), ("call, auto", auto, call.token_ids),
                                ("text, auto", auto, text)]:
        grammar = spec.grammar()
        assert grammar is not None
        per_token(label, lambda: JsonConstraint(grammar, model.tokenizer, vocab, sorted(model.eos_ids)), step,
                  answer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
