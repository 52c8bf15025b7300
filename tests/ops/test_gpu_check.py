"""The GPU check cannot rot: its CPU dry run runs every section and reports figures or why it has none."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

SECTIONS = ("blocks", "swarm", "decode", "quant")


def test_the_dry_run_reports_every_section(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = result["sections"]
    assert set(sections) == set(SECTIONS)
    for name, figures in sections.items():
        assert "skipped" in figures or len(figures) > 1, f"{name} has neither figures nor a skip reason"
    failed = {name: f["skipped"] for name, f in sections.items() if f.get("skipped", "").startswith("failed")}
    assert not failed, failed
    assert sections["blocks"]["float32"]["ok"] and sections["blocks"]["bfloat16"]["ok"]
    assert sections["decode"]["batch1"]["eager"]["tok_s"] > 0
    assert "skipped" in sections["decode"]["batch1"]["graphed"]  # no CUDA graph on a CPU
    assert set(sections["decode"]["batched"]) == {"1", "8"}
    for scheme in ("int8", "nf4"):
        quant = sections["quant"][scheme]
        assert quant["max_relative_error_vs_base"] <= quant["scheme_tolerance"]
    if "skipped" not in sections["swarm"]:
        assert sections["swarm"]["same_tokens"], sections["swarm"]
    assert (tmp_path / "summary.txt").read_text().count("\n") > 20
