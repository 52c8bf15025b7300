"""What structured output costs per token: local generation with and without a JSON schema, and the
grammar engines' own time per token on the same answer (shards/constrained.py says why llguidance).

Both sides generate the same number of tokens (the constrained answer's length), greedy, side by
side. The engines then replay that answer token by token: fill the mask for the next token (and
set refused logits to -inf), then advance; xgrammar and outlines-core are measured when installed.

    python scripts/bench_constrained.py [--model smollm2-135m-instruct] [--tokens 96] [--repeats 5]
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Callable

import torch

from benchlib import alternate, bench_parser, median_tps
from shards.catalog import resolve_model
from shards.constrained import JsonConstraint, json_grammar
from shards.generation import encode_prompt
from shards.local import LocalModel

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "city", "hobbies"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"},
                         "hobbies": {"type": "array", "items": {"type": "string"}}}}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
PROMPT = "Describe a fictional person as JSON: name, age, city and a list of hobbies."


def per_token(label: str, start: Callable[[], Any], step: Callable[[Any, int], None], answer: list[int]) -> None:
    """Median time to mask and advance over `answer`, after `start()` (timed once: the compile)."""
    began = time.perf_counter()
    state = start()
    compiled = time.perf_counter() - began
    times = []
    for token in answer:
        began = time.perf_counter()
        step(state, token)
        times.append(time.perf_counter() - began)
    print(f"{label:<14} compile {compiled * 1e3:7.1f} ms   per token {statistics.median(times) * 1e6:6.0f} us median")


def engines(model: LocalModel, answer: list[int]) -> None:
    vocab, logits = model.head.embed_tokens.num_embeddings, torch.randn(model.head.embed_tokens.num_embeddings)

    def ours(c: JsonConstraint, token: int) -> None:
        c.mask(logits)
        c.accept(token)
    grammar = json_grammar(FORMAT)
    JsonConstraint(grammar, model.tokenizer, vocab, sorted(model.eos_ids))  # the tokenizer's one-off conversion
    per_token("llguidance", lambda: JsonConstraint(grammar, model.tokenizer, vocab, sorted(model.eos_ids)), ours,
              answer)
    try:
        import xgrammar as xgr
    except ImportError:
        print("xgrammar       not installed")
    else:
        compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(model.tokenizer, vocab_size=vocab))
        bits = xgr.allocate_token_bitmask(1, vocab)

        def xg(m: Any, token: int) -> None:
            m.fill_next_token_bitmask(bits)
            xgr.apply_token_bitmask_inplace(logits.clone()[None], bits)
            m.accept_token(token)
        per_token("xgrammar", lambda: xgr.GrammarMatcher(compiler.compile_json_schema(json.dumps(SCHEMA))), xg,
                  answer)
    try:
        import outlines_core as oc
    except ImportError:
        print("outlines-core  not installed")
    else:
        vocabulary = oc.Vocabulary(sorted(model.eos_ids)[0], _byte_vocabulary(model.tokenizer, model.eos_ids))
        bits32 = torch.zeros((vocab + 31) // 32, dtype=torch.int32)

        def outlines(guide: Any, token: int) -> None:
            guide.write_mask_into(bits32.data_ptr(), bits32.numel(), 4)
            guide.advance(token)
        per_token("outlines-core", lambda: oc.Guide(oc.Index(oc.json_schema.build_regex_from_schema(
            json.dumps(SCHEMA), r"[ ]?"), vocabulary)), outlines, answer)


def _byte_vocabulary(tokenizer: Any, eos_ids: set[int]) -> dict[bytes, list[int]]:
    """Token bytes to ids for a byte-level BPE vocabulary (GPT-2's printable stand-ins for bytes)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    stand_in = {chr(b): b for b in printable}
    stand_in.update({chr(256 + i): b for i, b in enumerate(b for b in range(256) if b not in printable)})
    out: dict[bytes, list[int]] = {}
    for text, i in tokenizer.get_vocab().items():
        if i not in eos_ids and i not in tokenizer.all_special_ids:
            out.setdefault(bytes(stand_in[c] for c in text), []).append(i)
    return out


def main() -> int:
    args = bench_parser(__doc__, tokens=96).parse_args()
    model = LocalModel.load(resolve_model(args.model))
    ids = encode_prompt(model.tokenizer, PROMPT)
    answer = model.generate(ids, args.tokens, response_format=FORMAT)
    print(f"constrained answer ({len(answer.token_ids)} tokens, {answer.finish_reason}): {answer.text}")
    n = len(answer.token_ids)
    runs = alternate({"json_schema": lambda: model.generate(ids, n, response_format=FORMAT),
                      "free": lambda: model.generate(ids, n, ignore_eos=True)}, args.repeats)
    constrained, free = median_tps(runs["json_schema"]), median_tps(runs["free"])
    print(f"local generation, {n} tokens: free {free:.1f} tok/s, json_schema {constrained:.1f} tok/s "
          f"({(free / constrained - 1) * 100:+.1f}% time per token)")
    engines(model, answer.token_ids)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
