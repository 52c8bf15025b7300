"""The scale test's short form: 8 real nodes of a thin synthetic model, one wave of deaths and joins
(with a hole in coverage), a client generating throughout (scripts/scale_test.py runs 30+)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# `make long`, not CI: it fails today (the xfail's reason), and an expected failure should not cost CI minutes.
pytestmark = [pytest.mark.swarm, pytest.mark.model, pytest.mark.long]  # the synthetic model borrows the default's tokenizer


@pytest.mark.xfail(reason="on a loaded machine nodes of one span still herd between holes (their records do not "
                          "show each other) and a client's view can lag the observer's: see README, scale test",
                   strict=False)
def test_coverage_returns_after_a_wave_and_no_client_fails_while_covered(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "scale_test.py"), "--nodes", "8", "--waves", "1",
                          "--pause", "5", "--announce-period", "10", "--rebalance-period", "15",  # 8 nodes: quick
                          "--settle", "180", "--idle-window", "0", "--work", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert run.stdout.strip(), run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    progress = run.stderr[-3000:] + run.stdout[-3000:]
    assert result["waves"][0]["restored_s"] is not None, progress
    assert result["failed_with_cover"] == [], progress
    assert result["client_generations"] > 0, progress
    assert result["passed"], progress
