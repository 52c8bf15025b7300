"""`swarmlm ARGV` run in the test process: the same parser and command as `python -m swarmlm.cli`, without
a fresh interpreter's imports of torch, hivemind and transformers (one to two CPU-seconds a call).
Tests whose point is a process of its own (a fresh one with only the shards, start-up imports) keep
the subprocess."""

from __future__ import annotations

import subprocess

import pytest

from node.errors import run_command
from swarmlm.cli import build_parser


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """Exit status, stdout and stderr of `swarmlm ARGV`, as `subprocess.run(..., text=True)` gives them.
    Logging stays pytest's: `main()` would replace the root logger's handlers with its own."""
    capsys.readouterr()  # what the test printed before is not the command's
    code = run_command(build_parser().parse_args(argv))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["swarmlm", *argv], code, out, err)
