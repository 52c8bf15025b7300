"""Start local node processes by forking one Python that has already imported the node's code.

A node process spends most of its start-up CPU importing torch, hivemind and this project (about
1.6 of 1.8 CPU-seconds on this project's 2-core CI machine); a local swarm of tests or the scale test
starts hundreds. `ForkServer` runs `python -m node.forkserver` once per owning process: it imports
the daemon's modules, stays single-threaded, and forks a child per request. The child becomes what
`python -m node ARGS` (or a test's `program`) would be: its own session, the requested environment
and argv, stdout and stderr into its log, SIGTERM when the server dies. It then runs the same
`main()` and leaves through normal interpreter shutdown, with its exit status written where
`ForkedProcess` (the `subprocess.Popen` subset LocalSwarm and the tests use) finds it.

Requests are JSON lines on the server's stdin; each answer is the child's pid on its stdout. The
server exits, taking its children with it, when its owner closes stdin or dies.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing as mp
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

REAP_EVERY_S = 0.05
NETNS_DIR = Path("/run/netns")  # where `ip netns add` names network namespaces
CLONE_NEWNET = 0x40000000


def die_with_parent() -> None:
    """In a child (before exec, or after fork): SIGTERM it if whoever started it dies (a killed test
    run, say), so no node outlives its swarm's owner."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Process(Protocol):
    """What `kill_group` needs of a process handle: `subprocess.Popen` or `ForkedProcess`."""

    pid: int

    def poll(self) -> int | None: ...


def kill_group(proc: Process, sig: int = signal.SIGKILL) -> None:
    """Signal the process group `proc` leads (a node with its DHT process and p2pd), if it is still its.

    Once the leader has exited and been reaped, its pid is free, and here (pid_max 32,768; a test run
    forks and threads through that many in minutes) soon another process's: a group signalled by a
    stale pid once killed another test's nodes. So with the leader gone, what is left of its group is
    signalled only while no process holds the pid."""
    if proc.poll() is not None and Path(f"/proc/{proc.pid}").exists():
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def set_network_namespace(fd: int) -> None:
    """Move this thread into the network namespace open at `fd` (setns(2); os.setns is Python 3.12+)."""
    import ctypes

    if ctypes.CDLL("libc.so.6", use_errno=True).setns(fd, CLONE_NEWNET):
        raise OSError(ctypes.get_errno(), f"setns: {os.strerror(ctypes.get_errno())}")


class ForkedProcess:
    """A forked node seen from its owner: pid, signals, and the exit status the server records."""

    def __init__(self, pid: int, args: Sequence[str], status: Path) -> None:
        self.pid, self.args, self._status = pid, list(args), status
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._status.exists():
            self.returncode = int(self._status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(REAP_EVERY_S)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class ForkServer:
    """The owner's end: one server process per owner, started on first use."""

    _shared: "ForkServer | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-u", "-m", "node.forkserver"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                      preexec_fn=die_with_parent)
        self._request_lock = threading.Lock()

    @classmethod
    def shared(cls) -> "ForkServer":
        with cls._lock:
            if cls._shared is None or cls._shared._proc.poll() is not None:
                cls._shared = cls()
            return cls._shared

    @classmethod
    def shared_pid(cls) -> int | None:
        """The shared server's pid, None before first use: its nodes are its children, not the owner's,
        so their CPU (scripts/cpu_profile.py) is read from the server's /proc entry."""
        return cls._shared._proc.pid if cls._shared is not None else None

    def spawn(self, argv: Sequence[str], *, env: dict[str, str], log: Path,
              program: str | None = None, netns: str | None = None) -> ForkedProcess:
        """Fork a child running `python -m node ARGV` (or the script `program` with ARGV), logging to `log`,
        inside the network namespace `netns` when given (what `ip netns exec NETNS` does for a network)."""
        status = log.with_name(log.name + ".exit")
        status.unlink(missing_ok=True)
        log.write_bytes(b"")  # there before the child runs: the owner reads it for the `ready` line
        request = {"argv": list(argv), "program": program, "env": env, "log": str(log), "status": str(status),
                   "cwd": os.getcwd(), "netns": netns}
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._request_lock:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
            answer = self._proc.stdout.readline()
        if not answer:
            raise OSError(f"the node fork server exited with status {self._proc.wait()}")
        shown = [sys.executable, *([program] if program else ["-m", "node"]), *argv]
        return ForkedProcess(json.loads(answer)["pid"], shown, status)


def _serve() -> dict[str, Any]:
    """The server's loop; returns (only in a forked child) the request that child is to run."""
    children: dict[int, Path] = {}
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], REAP_EVERY_S)
        _reap(children)
        if not ready:
            continue
        line = sys.stdin.buffer.readline()
        if not line:
            sys.exit(0)  # the owner is gone; the children's death signal stops them
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        children[pid] = Path(request["status"])
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()


def _reap(children: dict[int, Path]) -> None:
    """Record each exited child's status as subprocess reports it (-N for a signal N)."""
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        path = children.pop(pid, None)
        if path is not None:
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(str(code))
            tmp.replace(path)


def _become(request: dict[str, Any]) -> None:
    """In the child: its network namespace, a session of its own, the owner's environment, the log as
    stdout and stderr."""
    if request["netns"]:
        fd = os.open(NETNS_DIR / request["netns"], os.O_RDONLY)
        try:
            set_network_namespace(fd)
        finally:
            os.close(fd)
    os.setsid()
    die_with_parent()
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    import numpy as np
    import torch

    torch.seed()  # a fork inherits the server's generators
    np.random.seed()
    _own_hivemind_locks()


def _own_hivemind_locks() -> None:
    """hivemind creates process-shared locks (POSIX semaphores) when imported, for a process and the ones
    it forks (a node and its DHT process) to share. Forked from this server, every node would share them
    with every other node of its owner; one SIGKILLed while holding one (MPFuture's update lock is taken
    for every DHT reply) left them held, and every later node of that owner hung at its DHT's start, its
    log empty. Each node gets its own."""
    from hivemind.utils.asyncio import _AsyncContextWrapper
    from hivemind.utils.mpfuture import MPFuture

    MPFuture.reset_backend()  # its initialisation and update locks, and SharedBytes'
    _AsyncContextWrapper.EXECUTOR_LOCK = mp.Lock()


def _run(request: dict[str, Any]) -> int:
    if request["program"]:
        import runpy

        sys.argv = [request["program"], *request["argv"]]
        sys.path[0] = str(Path(request["program"]).parent)
        runpy.run_path(request["program"], run_name="__main__")
        return 0
    from .cli import main

    sys.argv = [sys.executable, *request["argv"]]
    return main(request["argv"])


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C reaches the owner; the owner stops the nodes
    from . import server  # noqa: F401  the imports every node pays for, paid once here
    from .cli import main as _cli  # noqa: F401

    request = _serve()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _become(request)
    _leave(_exit_status(request))


def _exit_status(request: dict[str, Any]) -> int:
    """Run the request; its exit status as the interpreter would make it (a traceback and 1 for an error)."""
    try:
        return _run(request)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - reported as an uncaught exception would be
        sys.excepthook(*sys.exc_info())
        return 1


def _leave(status: int) -> None:
    """Exit as multiprocessing's forked children do: other threads joined, exit handlers run (logging's
    flush, multiprocessing's joins), stdio flushed, then `os._exit`. The interpreter's own teardown of all
    the server imported (torch's modules and operator registrations) cost every node ~0.7 CPU-s at exit."""
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter's exit does first
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
