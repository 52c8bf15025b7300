"""`swarmlm --help` and `--version` must not pay for torch or hivemind: a volunteer's first command
should answer at once, and every subcommand's help must still build."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "hivemind", "transformers", "safetensors")
# `routing` registers hivemind as a bare package (routing/hivemind_import.py): free, and no sign of a
# load; any real use imports its submodules.
BARE = ("hivemind",)

PROBE = """
import json, sys
from swarmlm.cli import build_parser
parser = build_parser()
helps = {}
for name, sub in parser._subparsers._group_actions[0].choices.items():
    helps[name] = sub.format_help()
print(json.dumps({"loaded": sorted(m for m in sys.modules if m.split(".")[0] in %r and m not in %r),
                  "commands": sorted(helps)}))
""" % (HEAVY, BARE)


def test_building_the_whole_cli_imports_no_heavy_library() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report["loaded"] == [], f"importing the CLI pulled in {report['loaded'][:5]}"
    assert {"generate", "node", "shards", "ledger", "swarm", "audit", "demo"} <= set(report["commands"])


def test_version_answers() -> None:
    out = subprocess.run([sys.executable, "-m", "swarmlm.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("swarmlm ")


RUN = """
import json, sys
from swarmlm.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in %r and m not in %r)}))
""" % (HEAVY, BARE)


def test_node_init_and_a_status_that_finds_no_node_import_no_heavy_library(tmp_path) -> None:
    """Logging set up for every command routes hivemind's lines only once something imports hivemind."""
    for argv in (["node", "init", "--dir", str(tmp_path)], ["node", "status", "--config", str(tmp_path / "node.toml")],
                 ["ledger", "tail", "--ledger", str(tmp_path / "none.sqlite")]):
        out = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True, timeout=120)
        report = json.loads(out.stdout.splitlines()[-1])
        assert report["loaded"] == [], f"{argv[:2]} pulled in {report['loaded'][:5]}"
    assert report["code"] == 2 and "no ledger" in out.stderr
