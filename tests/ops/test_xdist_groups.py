"""The heavy tier's two workers rely on `--dist loadgroup` keeping a module's tests on one worker (its
swarm starts once) and the WAN lab's modules together (tests/conftest.py). pytest 9.2 made
pytest-xdist drop the groups without a word (pytest-dev/pytest-xdist#1386): every module's swarm
then started on both workers, and a worker was OOM-killed. This runs two small modules on two
workers and checks where each test ran."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

from .. import conftest

MODULES = ("tests/routing/test_span_stale.py", "tests/routing/test_bans.py")


def test_a_modules_tests_run_on_one_worker() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                           "no:cacheprovider", "-o", "addopts=", *MODULES], cwd=conftest.REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    workers: dict[str, set[str]] = defaultdict(set)
    for worker, test in re.findall(r"\[(gw\d+)\] \[ *\d+%\] PASSED (\S+)", proc.stdout):
        workers[test.split("::")[0]].add(worker)
    assert set(workers) == set(MODULES), proc.stdout[-3000:]
    assert all(len(ran_on) == 1 for ran_on in workers.values()), dict(workers)
