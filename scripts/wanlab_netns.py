"""Network namespaces of WAN labs: create, enter, and remove them together with every process inside.

A lab is alive while its forwarder holds `/run/swarmlm-wan/<lab>.lock` (an flock, released by the
kernel however the forwarder ends); namespaces of a lab whose lock is free are leftovers of a crash,
which `wanlab.py down` removes without touching the labs of anyone else on the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

from node.forkserver import NETNS_DIR, set_network_namespace
from wanlab_spec import PREFIX, LabError

LOCK_DIR = Path("/run/swarmlm-wan")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise LabError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def create(namespace: str) -> None:
    ip("netns", "add", namespace)
    ip("-n", namespace, "link", "set", "lo", "up")


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run the block with this thread inside `namespace`: sockets and TUN devices made there stay there."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        try:
            set_network_namespace(target)
        except OSError as e:
            raise LabError(f"cannot enter namespace {namespace}: {e.strerror}") from None
        try:
            yield
        finally:
            set_network_namespace(own)  # OSError if this thread cannot return
    finally:
        os.close(own)
        os.close(target)


def pids_in(namespace: str) -> list[int]:
    """Processes whose network namespace is this one (what `ip netns pids` prints)."""
    try:
        ns = os.stat(NETNS_DIR / namespace)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                st = os.stat(f"/proc/{entry.name}/ns/net")
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            if (st.st_ino, st.st_dev) == (ns.st_ino, ns.st_dev):
                pids.append(int(entry.name))
    return pids


def remove(namespace: str) -> None:
    """SIGKILL what runs inside, then delete the namespace (its TUN device goes with it)."""
    for pid in pids_in(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(LabError):  # already gone
        ip("netns", "delete", namespace)


def namespaces_of(lab: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{PREFIX}{lab}-"))


def hold_lock(lab: str) -> int:
    """Mark the lab alive for as long as this process lives; LabError if another process holds it."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_DIR / f"{lab}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LabError(f"lab {lab} is already running; pick another name") from None
    return fd


def remove_lab(lab: str, lock_fd: int) -> None:
    for namespace in namespaces_of(lab):
        remove(namespace)
    with contextlib.suppress(FileNotFoundError):
        (LOCK_DIR / f"{lab}.lock").unlink()
    os.close(lock_fd)


def remove_leftovers() -> list[str]:
    """Remove every lab whose forwarder is gone; return their names. Running labs are left alone."""
    namespaces = NETNS_DIR.glob(f"{PREFIX}*") if NETNS_DIR.is_dir() else []
    removed = []
    for lab in sorted({p.name[len(PREFIX):].split("-", 1)[0] for p in namespaces}):
        try:
            fd = hold_lock(lab)
        except LabError:
            continue
        remove_lab(lab, fd)
        removed.append(lab)
    return removed


def unavailable_reason() -> str | None:
    """Why this machine cannot run a lab (not root, no `ip`, no TUN), or None when it can."""
    if os.geteuid() != 0:
        return "the WAN lab needs root (network namespaces and TUN devices): run it as root"
    if not os.path.exists("/dev/net/tun"):
        return "the WAN lab needs /dev/net/tun (load the tun module)"
    lab = f"probe{os.getpid()}"
    lock = hold_lock(lab)
    try:
        create(f"{PREFIX}{lab}-probe")
    except (LabError, FileNotFoundError) as e:
        return f"cannot create network namespaces here: {e}"
    finally:
        remove_lab(lab, lock)
    return None
