"""The simulator's command line: it simulates what the SDK does unless told otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "swarmsim.py"


@pytest.mark.parametrize("flags, chains", [((), "pushed chains"), (("--no-push",), "relayed chains"),
                                           (("--ring",), "pushed chains (rings where they close)"),
                                           (("--ring", "whole"),
                                            "pushed chains (rings where they close: whole-model nodes, alone)")])
def test_chains_are_pushed_as_the_sdks_unless_told_to_relay(flags: tuple[str, ...], chains: str) -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--scenario", "herd", "--hours", "0.005", "--placement",
                          "petals", "--no-plots", *flags], capture_output=True, text=True, timeout=120, check=True)
    header, columns, row = run.stdout.splitlines()[:3]
    assert f", {chains}," in header
    assert columns.split()[:3] == ["placement", "offered/s", "tokens/s"] and row.split()[0] == "petals"


def test_rings_need_pushed_chains() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--scenario", "herd", "--ring", "--no-push"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--ring needs pushed chains" in run.stderr
