"""`swarmlm swarm …`: a local swarm of real node processes, and a swarm's coverage status."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from node.local_swarm import LocalSwarm
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.manifest import Manifest
from shards.paths import swarmlm_home

from . import swarm_status


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("swarm", help="start a local swarm, inspect a swarm")
    sub = p.add_subparsers(dest="swarm_command", required=True, metavar="COMMAND")
    local = sub.add_parser("local", help="start a bootstrap peer and N nodes on this machine",
                           description="Start a bootstrap peer and N node processes splitting the model's blocks "
                                       "evenly, wait until all are online, write STATE_DIR/swarm.json, and stop "
                                       "exactly those processes on Ctrl-C or SIGTERM.")
    local.add_argument("--model", default=DEFAULT_MODEL, help=f"store folder or catalogued name (default {DEFAULT_MODEL})")
    local.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    local.add_argument("--state-dir", type=Path, default=None, help="where nodes keep identities, ledgers and logs "
                                                                    "(default $SWARMLM_HOME/local-swarm)")
    local.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    local.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype of every node")
    local.set_defaults(func=_local)
    swarm_status.add_parser(sub)


def _local(args: argparse.Namespace) -> int:
    store = resolve_model(args.model)
    num_blocks = Manifest.load(store).num_blocks
    state_dir = args.state_dir or swarmlm_home() / "local-swarm"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"starting a bootstrap peer and {args.nodes} nodes for {num_blocks} blocks…", file=sys.stderr, flush=True)
    with LocalSwarm(str(store), state_dir, host=args.host) as swarm:
        swarm.start(args.nodes, num_blocks, [args.dtype] * args.nodes if args.dtype else None)
        state = swarm.write_state()
        for node in swarm.nodes:
            print(f"{node.name}  blocks {node.blocks[0]:>3}:{node.blocks[1]:<3}  pid {node.pid:<7} {node.peer_id}")
        print(f"\ninitial peers: {' '.join(swarm.initial_peers)}")
        print(f"state: {state}")
        print("try:  swarmlm generate --peers " + " ".join(swarm.initial_peers) + ' "What is the capital of France?"')
        print("press Ctrl-C to stop the swarm", flush=True)
        stop.wait()
        print("stopping…", file=sys.stderr, flush=True)
    return 0
