"""`swarmlm node init` writes a config `node run` reads, creates the identity once, and says how to start."""

from __future__ import annotations

import subprocess

from ledger.keys import Identity
from node.config import resolve
from node.init import init_node, start_instructions
from swarmlm.cli import build_parser
from tests.conftest import SWARMLM


def node_init(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(SWARMLM + ["node", "init", *args], capture_output=True, text=True, env=env, timeout=120)


def test_init_writes_a_config_and_identity_and_prints_the_start_command(tmp_path, cli_env):
    state = tmp_path / "state"
    proc = node_init("--dir", str(state), env=cli_env)
    assert proc.returncode == 0, proc.stderr
    peer_id = Identity.load_or_create(state / "identity.key").peer_id
    assert f"peer ID {peer_id}" in proc.stdout
    assert f"swarmlm node run --config {state / 'node.toml'} --new-swarm" in proc.stdout
    assert f"swarmlm node run --config {state / 'node.toml'} --initial-peers " in proc.stdout
    config = resolve(build_parser().parse_args(["node", "run", "--config", str(state / "node.toml")]), {})
    assert (config.state_dir, config.identity, config.sources["state_dir"]) == (state, state / "identity.key", "file")
    assert (state.stat().st_mode & 0o777, (state / "identity.key").stat().st_mode & 0o777) == (0o700, 0o600)


def test_init_refuses_to_overwrite_a_config_and_force_keeps_the_identity(tmp_path, cli_env):
    cli_env["SWARMLM_HOME"] = str(tmp_path)  # the default folder: $SWARMLM_HOME/node
    first = init_node(tmp_path / "node")
    first.config.write_text('[node]\npublic_name = "mine"\n')
    again = node_init(env=cli_env)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr and "mine" in first.config.read_text()
    forced = init_node(tmp_path / "node", force=True)
    assert "mine" not in forced.config.read_text()
    assert (forced.peer_id, forced.new_identity) == (first.peer_id, False)
    assert "kept the existing identity" in start_instructions(forced)


def test_status_finds_the_node_a_config_names(tmp_path, cli_env):
    """`node status --config` looks where `node run --config` puts the node (no node runs: it says so)."""
    state = tmp_path / "state"
    assert f"swarmlm node status --config {state / 'node.toml'}" in node_init("--dir", str(state), env=cli_env).stdout
    proc = subprocess.run(SWARMLM + ["node", "status", "--config", str(state / "node.toml")], capture_output=True,
                          text=True, env=cli_env, timeout=120)
    assert proc.returncode == 2 and f"no running node found beside {state / 'identity.key'}" in proc.stderr
