"""The fork server's children behave as exec'd processes would for LocalSwarm and the tests: argv,
environment, log, a session of their own, exit statuses as subprocess reports them, fresh RNGs."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from node.forkserver import ForkServer

pytestmark = pytest.mark.swarm  # it starts a process

PROGRAM = """
import os, sys, time, torch
print("argv", sys.argv[1:], "env", os.environ.get("FORKED_VALUE"), "rand", torch.rand(1).item(), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[1] == "sleep":
    time.sleep(60)
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def server() -> ForkServer:
    return ForkServer()


def _spawn(server: ForkServer, tmp_path: Path, name: str, *argv: str):  # noqa: ANN202
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    return server.spawn(list(argv), env=dict(os.environ, FORKED_VALUE=name), log=tmp_path / f"{name}.log",
                        program=str(program))


def test_a_child_runs_its_program_with_its_argv_env_and_log_and_reports_its_exit_status(server, tmp_path):
    children = [_spawn(server, tmp_path, f"c{i}", "exit", "3") for i in range(2)]
    assert [c.wait(timeout=60) for c in children] == [3, 3]
    logs = [(tmp_path / f"c{i}.log").read_text() for i in range(2)]
    assert all(f"argv ['exit', '3'] env c{i}" in log and "to stderr" in log for i, log in enumerate(logs))
    assert len({log.split("rand")[1].split()[0] for log in logs}) == 2  # each child reseeds torch


def test_a_signalled_child_is_its_own_session_and_reports_minus_the_signal(server, tmp_path):
    child = _spawn(server, tmp_path, "sleeper", "sleep", "0")
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.5)
    assert os.getpgid(child.pid) == child.pid and os.getsid(child.pid) == child.pid
    os.killpg(child.pid, signal.SIGTERM)
    assert child.wait(timeout=60) == -signal.SIGTERM
    assert child.poll() == -signal.SIGTERM
