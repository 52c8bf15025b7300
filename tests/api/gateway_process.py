"""`swarmlm api` as a real process for tests: started on a free port, stopped with everything it spawned."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from node.forkserver import die_with_parent, kill_group
from tests.conftest import SWARMLM
from tests.waiting import until

READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class GatewayProcess:
    url: str  # http://127.0.0.1:PORT
    api_key: str | None
    identity: Path
    ledger: Path
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env.setdefault("SWARMLM_HOME", str(Path.home() / ".cache" / "swarmlm"))
    return env


@contextmanager
def run_gateway(peers: Sequence[str], state: Path, *, api_key: str | None = None,
                args: Sequence[str] = ()) -> Iterator[GatewayProcess]:
    """Start the gateway (the key through SWARMLM_API_KEY, as a deployment would), wait for its ready line."""
    state.mkdir(parents=True, exist_ok=True)
    log = state / "gateway.log"
    identity, ledger = state / "identity.key", state / "ledger.sqlite"
    command = [*SWARMLM, "api", "--peers", *peers, "--port", "0", "--identity", str(identity), "--ledger",
               str(ledger), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent,  # a killed test run takes its gateways with it
                                env=_env({"SWARMLM_API_KEY": api_key} if api_key else {}))
    try:
        url = _wait_ready(proc, log)
        yield GatewayProcess(url, api_key, identity, ledger, log)
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen, log: Path) -> str:
    """The URL of the gateway's `ready` line; a gateway that exits first fails at once."""
    def ready_url() -> str | None:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("ready "):
                return line.split()[1]
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        return None

    url = until(ready_url, timeout=READY_TIMEOUT_S)
    if url is None:
        raise RuntimeError(f"the gateway was not ready after {READY_TIMEOUT_S:.0f}s; see {log}")
    return url


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (uvicorn shuts down, the gateway closes its sessions), then reap its whole process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc)  # its DHT process and p2pd, if they outlived it
    proc.wait()
