"""The fork server's children behave as exec'd processes would for LocalSwarm and the tests: argv,
environment, log, a session of their own, exit statuses as subprocess reports them, fresh RNGs."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from node.forkserver import ForkServer, kill_group

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


LOCKS = """
import os, signal, sys
from hivemind.utils.asyncio import _AsyncContextWrapper
from hivemind.utils.mpfuture import MPFuture, SharedBytes
locks = [MPFuture._initialization_lock, MPFuture._update_lock, SharedBytes._lock, _AsyncContextWrapper.EXECUTOR_LOCK]
if sys.argv[1] == "die-holding":
    for lock in locks:
        lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)
print("acquired", [lock.acquire(timeout=10) for lock in locks], flush=True)
"""


def test_a_child_killed_holding_hiveminds_shared_locks_stalls_no_later_child(server, tmp_path):
    """hivemind's module-level multiprocessing locks are process-shared: a node SIGKILLed while holding
    one (MPFuture takes its update lock for every DHT reply) once hung every node its owner forked later."""
    program = tmp_path / "locks.py"
    program.write_text(LOCKS)
    dead = server.spawn(["die-holding"], env=dict(os.environ), log=tmp_path / "dead.log", program=str(program))
    assert dead.wait(timeout=60) == -signal.SIGKILL
    later = server.spawn(["probe"], env=dict(os.environ), log=tmp_path / "later.log", program=str(program))
    assert later.wait(timeout=120) == 0
    assert "acquired [True, True, True, True]" in (tmp_path / "later.log").read_text()


class Exited:
    """A handle whose process has exited and been reaped, its pid now another process's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int:
        return 0


def test_a_group_is_not_signalled_through_a_pid_another_process_has_taken():
    """pid_max is 32,768 here: a test run reuses pids within minutes, so a stale pid must not kill the
    group that now has it; a live leader's group is signalled."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        kill_group(Exited(other.pid))
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(timeout=0.5)
        kill_group(other)
        assert other.wait(timeout=60) == -signal.SIGKILL
    finally:
        other.kill()
        other.wait()
