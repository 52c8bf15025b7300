"""The systemd unit verifies, is hardened as documented, and agrees with the example config.

`systemd-analyze verify` insists that ExecStart's binary exists and is executable, and the unit
names /opt/swarmlm/.venv/bin/swarmlm. So the test verifies a copy whose ExecStart points at an
executable stub in a temporary folder; every other line is checked exactly as shipped.
`make test` installs systemd-analyze first where it can (`make tools`); in CI a missing one fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from node.config import OPTIONS, resolve
from swarmlm.cli import build_parser

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "swarmlm-node.service"
INSTALLED_BINARY = "/opt/swarmlm/.venv/bin/swarmlm"


def directives(text: str) -> dict[str, list[str]]:
    """Key -> values in order (a key may repeat, as SystemCallFilter= does)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return directives(UNIT.read_text())


@pytest.fixture
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        message = "systemd-analyze is missing: run `make tools` as root, or apt-get install systemd"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def stubbed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary replaced by an executable stub, so verify can run it anywhere."""
    stub = tmp_path / "swarmlm"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copy = tmp_path / UNIT.name
    text = UNIT.read_text()
    assert text.count(INSTALLED_BINARY) == 1
    copy.write_text(text.replace(INSTALLED_BINARY, str(stub)))
    return copy


def test_systemd_analyze_verify_passes_without_warnings(analyze, tmp_path):
    copy = stubbed_copy(tmp_path)
    proc = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    about_unit = [line for line in (proc.stdout + proc.stderr).splitlines() if UNIT.name in line]
    assert proc.returncode == 0 and not about_unit, proc.stdout + proc.stderr


def test_verify_would_catch_a_broken_unit(analyze, tmp_path):
    """Guards the test above: verify really reads our copy and reports its mistakes."""
    copy = stubbed_copy(tmp_path)
    copy.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomee=yes"))
    proc = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert "ProtectHomee" in proc.stderr


def test_security_exposure_stays_low(analyze, tmp_path):
    version = subprocess.run([analyze, "--version"], capture_output=True, text=True).stdout.split()[1]
    if int(version) < 250:
        pytest.skip(f"systemd {version} cannot score a unit file offline (needs 250+)")
    proc = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", str(stubbed_copy(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-600:]  # exposure above 2.0 ("OK") fails


def test_runs_the_node_as_a_dedicated_user_with_state_only_under_var_lib(unit):
    assert unit["ExecStart"] == [f"{INSTALLED_BINARY} node run --config /etc/swarmlm/node.toml"]
    assert unit["User"] == ["swarmlm"] and "DynamicUser" not in unit
    assert unit["StateDirectory"] == ["swarmlm"]
    env = dict(v.split("=", 1) for v in unit["Environment"])
    assert env["SWARMLM_HOME"] == env["HOME"] == "/var/lib/swarmlm"
    assert env["SWARMLM_STATE_DIR"] == "/var/lib/swarmlm/node"
    assert "ReadWritePaths" not in unit  # StateDirectory= is the one writable path


def test_hardening_directives_are_present(unit):
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "CapabilityBoundingSet": "", "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes",
                "LockPersonality": "yes", "RestrictRealtime": "yes", "SystemCallArchitectures": "native",
                "Restart": "on-failure", "KillSignal": "SIGTERM"}
    assert {key: unit.get(key) for key in expected} == {key: [value] for key, value in expected.items()}
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]


def test_stop_timeout_covers_the_drain_grace_of_the_example_config(unit):
    args = build_parser().parse_args(["node", "run", "--config", str(SYSTEMD / "node.toml")])
    config = resolve(args, {"SWARMLM_STATE_DIR": "/var/lib/swarmlm/node"})
    assert int(unit["TimeoutStopSec"][0]) >= config.drain_grace + 10
    assert unit["KillMode"] == ["mixed"]  # SIGTERM reaches the node first; its DHT child lives while it drains


def test_example_env_file_names_only_real_options():
    known = {o.env for o in OPTIONS}
    text = (SYSTEMD / "swarmlm-node.env").read_text()
    names = re.findall(r"^(\w+)=", text, flags=re.M)
    assert names and set(names) <= known
    environ = dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^\w+=", line))
    args = build_parser().parse_args(["node", "run", "--config", str(SYSTEMD / "node.toml")])
    assert resolve(args, environ).log_format == "text"
