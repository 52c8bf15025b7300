"""`swarmlm generate`: one prompt through the local block stack or through a swarm."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routing.errors import RoutingError
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.errors import ShardsError
from shards.paths import swarmlm_home

if TYPE_CHECKING:
    from shards.drafting import ModelDrafter
    from shards.generation import Generation, GenerativeModel
    from shards.local import LocalModel
    from shards.logits_processing import TokenLogprob


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """Sampling flags shared by every command that generates."""
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (default 0 = off)")
    p.add_argument("--min-p", type=float, default=0.0,
                   help="drop tokens less likely than this times the likeliest (default 0 = off)")
    p.add_argument("--presence-penalty", type=float, default=0.0,
                   help="OpenAI's: subtract this from every token already in the answer (-2..2, default 0)")
    p.add_argument("--frequency-penalty", type=float, default=0.0,
                   help="OpenAI's: subtract this times a token's count in the answer (-2..2, default 0)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="Hugging Face's: divide positive logits of tokens in prompt or answer by this "
                        "(multiply negative ones; default 1 = off)")
    p.add_argument("--seed", type=int, help="sampling seed, for repeatable samples (answer i of -n uses seed + i)")
    p.add_argument("-n", type=int, default=1, metavar="N",
                   help="N answers, one after the other, sharing the prompt's prefill (printed whole, not streamed)")
    p.add_argument("--logprobs", type=int, metavar="K",
                   help="each token's log-probability and its K likeliest alternatives (printed after the "
                        "answer, or in --json)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop at this text (repeatable)")
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    p.add_argument("--max-draft", type=int, default=0, metavar="N",
                   help="speculative decoding: draft up to N tokens per trip and verify them in one "
                        "(default 0 = off; drafts come from the prompt unless --draft-model is given)")
    structured = p.add_mutually_exclusive_group()
    structured.add_argument("--json-object", action="store_true",
                            help="constrain the answer to one JSON object (OpenAI's JSON mode)")
    structured.add_argument("--json-schema", type=Path, metavar="FILE",
                            help="constrain the answer to JSON valid against the JSON Schema in FILE")
    p.add_argument("--tools", type=Path, metavar="FILE",
                   help="OpenAI function tools (a JSON array) the answer may call; its calls are listed after "
                        "the answer (or under tool_calls in --json)")
    p.add_argument("--tool-choice", default=None, metavar="CHOICE",
                   help="with --tools: auto (default: the model chooses), none, required, or a tool's name")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate text locally or through a swarm",
                              description="Generate an answer to PROMPT, streaming text as it is produced. "
                                          "With --local the whole model runs in this process.")
    p.add_argument("prompt", metavar="PROMPT", nargs="?", help="the question or instruction")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="run every block in this process")
    where.add_argument("--peers", nargs="+", metavar="MADDR", help="multiaddrs of swarm peers to join")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"store folder or catalogued name (default {DEFAULT_MODEL})")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for the local blocks or head")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="local compute dtype (default: the store's)")
    p.add_argument("--identity", type=Path, default=None,
                   help="client key that signs receipts (default $SWARMLM_HOME/client/identity.key)")
    p.add_argument("--ledger", type=Path, default=None,
                   help="where the client logs its receipts (default $SWARMLM_HOME/client/ledger.sqlite)")
    p.add_argument("--json", action="store_true", help="print one JSON object with text and token_ids instead")
    p.add_argument("--draft-model", metavar="STORE",
                   help="a small store with the model's tokenizer that drafts locally (needs --max-draft)")
    p.add_argument("--accept-quant", nargs="*", default=["int8"], choices=["int8", "nf4", "q4_1"], metavar="SCHEME",
                   help="route through nodes serving these quantizations too (default: int8; nf4 and q4_1 only "
                        "when asked; no SCHEME: only the model's own weights). The client derives each one's "
                        "root from its own shards and admits only nodes serving exactly that")
    p.add_argument("--no-push", dest="push", action="store_false",
                   help="relay every hop through this client instead of letting nodes push to the next node "
                        "(slower over real links; for comparison)")
    p.add_argument("--ring", action=argparse.BooleanOptionalAction, default=True,
                   help="close rings where the chain allows (its first and last nodes run --ring): the node serving "
                        "the last block samples each next token and sends it to the first, while this client checks "
                        "every token off the critical path (default: on; --no-ring where this client shares the "
                        "nodes' cores)")
    add_generation_options(p)
    p.set_defaults(func=_generate)


def sampling_kwargs(args: argparse.Namespace) -> dict:
    return {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "min_p": args.min_p,
            "presence_penalty": args.presence_penalty, "frequency_penalty": args.frequency_penalty,
            "repetition_penalty": args.repetition_penalty, "seed": args.seed, "stop": args.stop,
            "logprobs": args.logprobs, "speculative": args.max_draft, "response_format": response_format(args),
            **tool_options(args)}


def tool_options(args: argparse.Namespace) -> dict:
    """`tools` from --tools FILE and `tool_choice` from --tool-choice (a bare name means that function)."""
    if args.tools is None:
        if args.tool_choice is not None:
            raise ShardsError("--tool-choice needs --tools FILE")
        return {}
    try:
        tools = json.loads(args.tools.read_text())
    except (OSError, ValueError) as e:
        raise ShardsError(f"--tools {args.tools}: {e}") from None
    choice = args.tool_choice
    if choice not in (None, "auto", "none", "required"):
        choice = {"type": "function", "function": {"name": choice}}
    return {"tools": tools, "tool_choice": choice}


def response_format(args: argparse.Namespace) -> dict | None:
    """OpenAI's `response_format` for --json-object or --json-schema FILE (named after the file)."""
    if args.json_object:
        return {"type": "json_object"}
    if args.json_schema is None:
        return None
    try:
        schema = json.loads(args.json_schema.read_text())
    except (OSError, ValueError) as e:
        raise ShardsError(f"--json-schema {args.json_schema}: {e}") from None
    return {"type": "json_schema", "json_schema": {"name": args.json_schema.stem, "schema": schema, "strict": True}}


def split_trailing_prompt(args: argparse.Namespace, peers_attr: str = "peers") -> None:
    """`--peers A B "prompt"`: argparse gives the prompt to --peers; a multiaddr starts with '/'."""
    peers = getattr(args, peers_attr) or []
    if args.prompt is None and peers and not peers[-1].startswith("/"):
        args.prompt = peers.pop()
    bad = [p for p in peers if not p.startswith("/")]
    if bad:
        raise RoutingError(f"{bad[0]!r} is not a multiaddr (like /ip4/127.0.0.1/tcp/PORT/p2p/PEER_ID)")
    if args.prompt is None:
        raise ShardsError("give a PROMPT")


def _generate(args: argparse.Namespace) -> int:
    split_trailing_prompt(args)
    if args.draft_model and not args.max_draft:
        raise ShardsError("--draft-model drafts only with speculation on: add --max-draft N (for example 4)")
    if args.local:
        return run_generation(load_local(args.model, args), args)
    from .sdk import RemoteModel

    client_dir = swarmlm_home() / "client"
    with RemoteModel.connect(args.peers, args.model, identity=args.identity or client_dir / "identity.key",
                             ledger=args.ledger or client_dir / "ledger.sqlite", device=args.device,
                             push=args.push, ring=args.ring, accept_quantized=args.accept_quant) as remote:
        return run_generation(remote, args)


def run_generation(model: GenerativeModel, args: argparse.Namespace) -> int:
    """Stream to stdout, or print one JSON object with --json; shared by local and swarm generation."""
    drafter = load_drafter(model, args)
    try:
        if args.json or args.n > 1:
            answers = model.choices(args.prompt, args.n, args.max_new_tokens, raw=args.raw, drafter=drafter,
                                    **sampling_kwargs(args))
            if args.json:
                out = [generation_json(g, model.tokenizer) for g in answers]
                print(json.dumps(out[0] if args.n == 1 else {"choices": out}))
                return 0
            for i, g in enumerate(answers):
                print(f"--- answer {i + 1} of {args.n} ---\n{g.text}")
                _print_logprobs(g.logprobs, model.tokenizer)
                _print_calls(g.tool_calls)
            return 0
        logprobs: list[TokenLogprob] = []
        text = ""
        options = sampling_kwargs(args)
        for event in model.stream(args.prompt, args.max_new_tokens, raw=args.raw, drafter=drafter, **options):
            text += event.text
            sys.stdout.write(event.text)
            sys.stdout.flush()
            if event.logprob is not None:
                logprobs.append(event.logprob)
        sys.stdout.write("\n")
        _print_logprobs(logprobs if args.logprobs is not None else None, model.tokenizer)
        if options.get("tools") and options.get("tool_choice") != "none":
            from shards.tool_calls import read_answer

            _print_calls([c.to_json() for c in read_answer(text).calls])
        return 0
    finally:
        if drafter is not None:
            drafter.close()


def load_drafter(model: GenerativeModel, args: argparse.Namespace) -> ModelDrafter | None:
    """The --draft-model drafter, on the same device and dtype as the local computation."""
    if not args.draft_model:
        return None
    from shards.drafting import ModelDrafter

    return ModelDrafter(load_local(args.draft_model, args), model.store.manifest)  # type: ignore[attr-defined]


def load_local(model: str, args: argparse.Namespace) -> LocalModel:
    """A whole model in this process, on --device in --dtype."""
    from shards.local import LocalModel
    from shards.store import parse_dtype

    return LocalModel.load(resolve_model(model), args.device, parse_dtype(args.dtype) if args.dtype else None)


def _token_text(tokenizer: Any, token: int) -> str:
    return tokenizer.decode([token]) if tokenizer is not None else ""


def _print_logprobs(logprobs: list[TokenLogprob] | None, tokenizer: Any) -> None:
    """One line per token: its log-probability, id and text, then the alternatives as id:logprob."""
    for lp in logprobs or []:
        alternatives = " ".join(f"{t}:{v:.4f}" for t, v in lp.top)
        print(f"{lp.logprob:9.4f} {lp.token_id:>7} {_token_text(tokenizer, lp.token_id)!r:<16} {alternatives}".rstrip())


def _print_calls(calls: list[dict] | None) -> None:
    for call in calls or []:
        print(f"tool call {call['id']}: {call['function']['name']}({call['function']['arguments']})")


def generation_json(g: Generation, tokenizer: Any = None) -> dict:
    out = {"text": g.text, "token_ids": g.token_ids, "finish_reason": g.finish_reason,
           "prompt_tokens": g.prompt_tokens, "time_to_first_token_s": round(g.time_to_first_token, 4),
           "tokens_per_second": round(g.tokens_per_second, 2), **g.extra}
    if g.logprobs is not None:
        out["logprobs"] = [{"token_id": lp.token_id, "token": _token_text(tokenizer, lp.token_id),
                            "logprob": lp.logprob, "top": [{"token_id": t, "logprob": v} for t, v in lp.top]}
                           for lp in g.logprobs]
    if g.tool_calls is not None:
        out["tool_calls"] = g.tool_calls
    return out
