"""Nothing acknowledged is lost: a writer SIGKILLed at random moments, 20 times, same file."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from ledger.keys import Identity
from ledger.store import Ledger, Store
from ledger.verify import verify_ledger

WRITER = Path(__file__).with_name("crash_writer.py")
REPO = Path(__file__).resolve().parents[2]


def _run_and_kill(ledger: Path, identity: Path, run: int, rng: random.Random) -> dict[int, str]:
    """Start the writer, SIGKILL it at a random moment, return what it acknowledged."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(ledger), str(identity), str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out = b""
    try:
        if rng.random() < 0.25:  # sometimes while it is still opening (or creating) the ledger
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
            # A moment counted in acknowledgements (a loaded machine cannot make it empty), then a little more.
            out = b"".join(proc.stdout.readline() for _ in range(rng.randint(1, 30)))
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        out += proc.stdout.read()  # the same buffered reader: nothing readline took ahead is lost
        err = proc.stderr.read()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    acknowledged = {}
    for line in out.decode().split("\n")[:-1]:  # the last piece may be cut mid-line
        if line != "ready":
            index, digest = line.split()
            acknowledged[int(index)] = digest
    return acknowledged


def test_acknowledged_entries_survive_sigkill(tmp_path: Path) -> None:
    ledger, identity = tmp_path / "ledger.sqlite", tmp_path / "identity.key"
    rng = random.Random(20)
    acknowledged: dict[int, str] = {}
    for run in range(20):
        acknowledged.update(_run_and_kill(ledger, identity, run, rng))
        Store(ledger, Identity.load_or_create(identity)).close()  # the restart
        report = verify_ledger(ledger)
        with Ledger(ledger) as reader:
            stored = {row.index: hashlib.sha256(row.data).hexdigest() for row in reader.rows(1)}
        missing = {i for i, digest in acknowledged.items() if stored.get(i) != digest}
        assert not missing, f"run {run}: acknowledged entries lost or changed: {sorted(missing)[:10]}"
        assert report.size == len(stored) + 1
    assert len(acknowledged) > 100
