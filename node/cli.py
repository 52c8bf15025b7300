"""`swarmlm node …`: set up a node, run it, run a bootstrap peer.

The same commands run as `python -m node …` (this package's own entry point): LocalSwarm starts its
nodes that way, so the daemon never needs the top-level `swarmlm` package to run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from . import config as node_config
from . import status
from .errors import run_command
from .logs import setup_logging

log = logging.getLogger(__name__)


DESCRIPTION = "A node serves a contiguous span of a model's blocks to the swarm."


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_commands(subparsers.add_parser("node", help="run and inspect a volunteer node", description=DESCRIPTION))


def main(argv: list[str] | None = None) -> int:
    """`python -m node COMMAND …`: the node's commands without the top-level CLI."""
    parser = argparse.ArgumentParser(prog="python -m node", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_commands(parser)
    args = parser.parse_args(argv)
    setup_logging("text", args.verbose)
    return run_command(args)


def _add_commands(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="node_command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="serve blocks of a model to the swarm",
        description="Load and verify shards, join the DHT, serve until SIGINT/SIGTERM. Every option can also "
                    "come from a SWARMLM_* environment variable or a TOML file (--config); precedence: "
                    "flag > environment > file > default; an empty variable or file value counts as not set. "
                    "`swarmlm node init` writes a commented file with every option.")
    node_config.add_arguments(run)
    run.set_defaults(func=_run)

    init = sub.add_parser("init", help="write a commented config and an identity, and say how to start",
                          description="Create a node's state folder: node.toml listing every option (commented, "
                                      "with its default) and the Ed25519 identity key, then print the peer ID and "
                                      "the command that starts the node.")
    init.add_argument("--dir", type=Path, default=None,
                      help="state folder for the config, identity and ledger (default $SWARMLM_HOME/node)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing node.toml (an existing identity is always kept)")
    init.set_defaults(func=_init)

    status.add_parser(sub)

    boot = sub.add_parser("bootstrap", help="run a DHT-only peer that others join through",
                          description="A bootstrap peer serves no blocks; it gives new nodes and clients a stable "
                                      "address to join the swarm through.")
    boot.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    boot.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    boot.add_argument("--identity", help="identity key file (default: a new identity each start)")
    boot.add_argument("--initial-peers", nargs="*", default=[], help="other bootstrap peers to join")
    boot.add_argument("--no-relay-service", dest="relay_service", action="store_false",
                      help="relay no circuits for private nodes (by default a bootstrap peer does, within "
                           "per-peer limits: it must be reachable itself)")
    boot.set_defaults(func=_bootstrap)


def _run(args: argparse.Namespace) -> int:
    from .server import Node

    config = node_config.resolve(args)
    setup_logging(config.log_format, getattr(args, "verbose", False))
    if not config.initial_peers and not config.new_swarm:
        print("error: give --initial-peers MADDR ... to join a swarm, or --new-swarm to start one",
              file=sys.stderr)
        return 2
    node = Node(config)
    return _until_signalled(node.run)


def _init(args: argparse.Namespace) -> int:
    from shards.paths import swarmlm_home

    from .init import init_node, start_instructions

    print(start_instructions(init_node(args.dir or swarmlm_home() / "node", args.force)), end="")
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from ledger.keys import Identity
    from routing import reachability as reach
    from routing import relay_stats
    from routing.dht import SwarmDHT
    from routing.protocol import DIALBACK
    from routing.records import SignedRecordValidator

    kwargs = {"identity_path": args.identity, "check_if_identity_free": False} if args.identity else {}
    seed = Identity.load_or_create(args.identity).seed if args.identity else None
    flags = reach.RelayLimits().p2pd_flags(args.relay_service)
    metrics_port = relay_stats.free_local_port() if args.relay_service else None
    if metrics_port is not None:  # what the relay carries: p2pd's own counters, on localhost only
        flags.update(relay_stats.p2pd_flags(metrics_port))
    dht = SwarmDHT(initial_peers=args.initial_peers or None, start=True,
                   host_maddrs=[f"/ip4/{args.host}/tcp/{args.port}"],
                   record_validators=[SignedRecordValidator(seed)], p2pd_flags=flags, **kwargs)

    async def serve(stop: asyncio.Event) -> None:
        p2p = await dht.replicate_p2p()
        await p2p.add_binary_stream_handler(DIALBACK, reach.answer)  # nodes ask it whether they are reachable
        if metrics_port is not None:
            log.info("relay service: %s", reach.RelayLimits())
            print(f"relay metrics http://127.0.0.1:{metrics_port}/metrics", flush=True)
        for maddr in dht.get_visible_maddrs():
            print(f"maddr {maddr}", flush=True)
        print(f"ready {dht.peer_id.to_base58()} bootstrap", flush=True)
        try:
            await stop.wait()
        finally:
            dht.shutdown()

    return _until_signalled(serve)


def _until_signalled(main) -> int:  # noqa: ANN001 - an async callable taking the stop event
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    uvloop.run(runner())  # lower per-message latency than the default loop: every step crosses it twice
    return 0
