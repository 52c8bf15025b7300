"""Shared swarms (tests/conftest.py `SHARED_SWARMS`) stop after the last test that uses them, their
dependents first, instead of idling to the end of the worker's run; a later user gets a fresh one.
Runs a small pytest session with stand-in fixtures of the same names and reads the order of events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .. import conftest

CONFTEST = '''
from pathlib import Path

import pytest

from tests.conftest import pytest_runtest_teardown  # noqa: F401  (the hook under test)

LOG = Path(__file__).with_name("events")


def log(event):
    with LOG.open("a") as f:
        f.write(event + "\\n")


@pytest.fixture(scope="session")
def swarm3():
    log("swarm up")
    yield
    log("swarm down")


@pytest.fixture(scope="session")
def gateway(swarm3):
    log("gateway up")
    yield
    log("gateway down")
'''

TESTS = '''
from conftest import log


def test_1(gateway):
    log("test 1")


def test_2(swarm3):
    log("test 2")


def test_3():
    log("test 3")


def test_4(swarm3):
    log("test 4")
'''


def test_a_shared_swarm_stops_after_its_last_user_and_its_dependents_first(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_order.py").write_text(TESTS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(conftest.REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "--rootdir", str(tmp_path), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (tmp_path / "events").read_text().splitlines() == [
        "swarm up", "gateway up", "test 1", "test 2", "gateway down", "swarm down", "test 3",
        "swarm up", "test 4", "swarm down"]
