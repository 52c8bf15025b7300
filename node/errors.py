"""Errors a node operator can cause (bad flags, config, ports); the CLI prints them and exits 2."""

from __future__ import annotations

import argparse
import os
import sys

from ledger.errors import LedgerError
from routing.errors import RoutingError
from shards.errors import ShardsError


class NodeError(Exception):
    """Base class of node errors with an actionable message."""


class ConfigError(NodeError):
    """An option's value is invalid, or the config file cannot be read."""


USER_ERRORS: tuple[type[BaseException], ...] = (ShardsError, LedgerError, RoutingError, NodeError)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command (`args.func`): a user's mistake is one `error:` line and exit 2, not a traceback."""
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `swarmlm … | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
