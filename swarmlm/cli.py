"""The one `swarmlm` command, git-style: each package registers its own subcommands; this only dispatches.

Command modules import torch, hivemind and transformers inside their handlers, never at module level,
so `swarmlm --help` and `--version` answer at once (tests/ops/test_cli_startup.py holds them to it).
"""

from __future__ import annotations

import argparse
import sys

from node.errors import run_command
from node.logs import setup_logging

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    from ledger import cli as ledger_cli
    from node import cli as node_cli
    from shards import cli as shards_cli

    from . import audit, demo, evidence_cli, generate, ledger_audit, swarm_cli
    from .api import cli as api_cli

    parser = argparse.ArgumentParser(
        prog="swarmlm",
        description="Run large open-weight language models across a swarm of volunteer machines, "
                    "with a signed ledger of who served which weights.")
    parser.add_argument("--version", action="version", version=f"swarmlm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, generate, swarm_cli, audit, api_cli, node_cli, shards_cli):
        module.register(sub)
    ledger_commands = ledger_cli.register(sub)
    for module in (ledger_audit, evidence_cli):
        module.register(ledger_commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("text", args.verbose)  # `node run` switches to its --log-format once it has its config
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
