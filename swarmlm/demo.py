"""`swarmlm demo`: the whole product in one command — a local swarm answers, the ledgers show who served it."""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.manifest import Manifest
from shards.paths import swarmlm_home


DEFAULT_PROMPT = "What is the capital of France?"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="start a local swarm, answer a prompt through it, show the ledgers",
                              description="Start a bootstrap peer and N node processes on 127.0.0.1, stream the "
                                          "answer to PROMPT through them, print which node served which blocks, "
                                          "stop the swarm, and show each node's ledger rows for the session.")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help=f"default: {DEFAULT_PROMPT!r}")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"store folder or catalogued name (default {DEFAULT_MODEL})")
    p.add_argument("--nodes", type=int, default=3, help="number of node processes (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.set_defaults(func=_demo)


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _demo(args: argparse.Namespace) -> int:
    from ledger import cli as ledger_cli
    from node.local_swarm import LocalSwarm

    from .sdk import RemoteModel

    store = resolve_model(args.model)
    manifest = Manifest.load(store)
    state = swarmlm_home() / "demo"
    shutil.rmtree(state, ignore_errors=True)  # ours alone: a fresh swarm and fresh ledgers each run
    _say(f"starting a bootstrap peer and {args.nodes} nodes for {manifest.name or store.name} "
         f"({manifest.num_blocks} blocks, root {manifest.root[:16]}…)")
    started = time.perf_counter()
    with LocalSwarm(str(store), state / "swarm") as swarm:
        swarm.start(args.nodes, manifest.num_blocks)
        names = {n.peer_id: n.name for n in swarm.nodes}
        for n in swarm.nodes:
            print(f"  {n.name}: blocks {n.blocks[0]}:{n.blocks[1]}  peer {n.peer_id}")
        print(f"  all online in {time.perf_counter() - started:.1f}s")

        _say(f"asking the swarm: {args.prompt}")
        with RemoteModel.connect(swarm.initial_peers, store, identity=state / "client" / "identity.key",
                                 ledger=state / "client" / "ledger.sqlite") as model:
            with model.inference_session(max_length=512) as session:
                for event in session.stream(args.prompt, args.max_new_tokens):
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                print()
            runner = session.runner
            _say("who served it")
            for span in runner.closed_spans:
                print(f"  blocks {span.hop.start:>2}:{span.hop.end:<2}  {names.get(span.peer, '?'):<7} "
                      f"{span.peer}  {span.tokens} tokens, receipt signed by client {model.client.peer_id[-10:]}")
            session_id = runner.session_id
        _say("stopping the swarm (nodes flush their ledgers)")
    for node in swarm.nodes:
        _say(f"{node.name}'s ledger: `swarmlm ledger query --ledger {node.ledger} --kind serve`")
        ledger_cli.main(["ledger", "query", "--ledger", node.ledger, "--kind", "serve"])
        ledger_cli.main(["ledger", "verify", node.ledger])
    print(f"\nsession {session_id}: each node logged a signed `serve` entry carrying the client's receipt.")
    return 0
