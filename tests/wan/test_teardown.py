"""Nothing of a lab outlives it: not on close, not after an exception, not when its harness is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import wanlab_netns
from wanlab import WanLab

from ..waiting import until
from .conftest import SCRIPTS

HARNESS = f"""
import subprocess, sys, time
sys.path.insert(0, {str(SCRIPTS)!r})
from wanlab import WanLab
lab = WanLab(["a", "b"], rtt_ms=20, mbit=100)
sleeper = subprocess.Popen(lab.wrap("a", ["sleep", "600"]))
print(lab.name, sleeper.pid, flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for its parent counts: it runs nothing and holds no namespace)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_close_removes_the_namespaces_and_kills_what_runs_inside():
    lab = WanLab(["a", "b"], rtt_ms=20, mbit=100)
    sleeper = subprocess.Popen(lab.wrap("b", ["sleep", "600"]))
    try:
        assert wanlab_netns.namespaces_of(lab.name) == [lab.namespace("a"), lab.namespace("b")]
        lab.close()
        assert wanlab_netns.namespaces_of(lab.name) == []
        assert sleeper.wait(timeout=30) == -signal.SIGKILL
        assert not lab.running
    finally:
        sleeper.kill()
        lab.close()


def test_an_exception_inside_the_with_block_removes_the_lab():
    with pytest.raises(RuntimeError, match="boom"):
        with WanLab(["a", "b"], rtt_ms=20, mbit=100) as lab:
            assert len(wanlab_netns.namespaces_of(lab.name)) == 2
            raise RuntimeError("boom")
    assert wanlab_netns.namespaces_of(lab.name) == []


def test_a_sigkilled_harness_leaves_no_namespace_and_no_process_behind():
    harness = subprocess.Popen([sys.executable, "-c", HARNESS], stdout=subprocess.PIPE, text=True)
    try:
        name, sleeper = harness.stdout.readline().split()
        assert len(wanlab_netns.namespaces_of(name)) == 2
        harness.kill()
        harness.wait()
        assert until(lambda: not wanlab_netns.namespaces_of(name), interval=0.1), wanlab_netns.namespaces_of(name)
        assert until(lambda: gone(int(sleeper)), interval=0.1)
    finally:
        harness.kill()
        harness.wait()


def test_down_removes_a_lab_whose_forwarder_was_killed_and_spares_running_labs():
    crashed, running = WanLab(["a", "b"], rtt_ms=20, mbit=100), WanLab(["a", "b"], rtt_ms=20, mbit=100)
    try:
        os.kill(crashed.forwarder_pid, signal.SIGKILL)
        assert until(lambda: not crashed.running, interval=0.1)
        assert len(wanlab_netns.namespaces_of(crashed.name)) == 2  # what `down` is for
        down = subprocess.run([sys.executable, str(SCRIPTS / "wanlab.py"), "down"], capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
        assert crashed.name in down.stdout and running.name not in down.stdout
        assert wanlab_netns.namespaces_of(crashed.name) == []
        assert len(wanlab_netns.namespaces_of(running.name)) == 2
    finally:
        crashed.close()
        running.close()
