"""`swarmlm api` settings: flag > SWARMLM_API_* > default, an empty variable counts as unset."""

from __future__ import annotations

import argparse
import subprocess

import pytest

from node.errors import ConfigError
from swarmlm.api.settings import add_arguments, resolve
from tests.conftest import SWARMLM

PEER = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWBjUGspBvuDEmQzKD7kGo4TySngo57iP7NVoMmpUySB3P"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_a_flag_beats_the_environment_which_beats_the_default(tmp_path):
    env = {"SWARMLM_API_KEY": "from-env", "SWARMLM_API_PORT": "9000", "SWARMLM_API_PEERS": f"{PEER},{PEER}",
           "SWARMLM_HOME": str(tmp_path), "SWARMLM_API_HOST": ""}
    s = resolve(_parse("--port", "8001"), env)
    assert (s.port, s.api_key, s.peers, s.host) == (8001, "from-env", [PEER, PEER], "127.0.0.1")
    assert resolve(_parse("--api-key", "from-flag"), env).api_key == "from-flag"
    assert resolve(_parse("--peers", PEER), {"SWARMLM_HOME": str(tmp_path)}).api_key is None


@pytest.mark.parametrize("argv, env, ring", [((), {}, True), (("--no-ring",), {}, False), (("--ring",), {}, True),
                                             ((), {"SWARMLM_API_RING": "yes"}, True),
                                             ((), {"SWARMLM_API_RING": "0"}, False),
                                             (("--ring",), {"SWARMLM_API_RING": "off"}, True),
                                             (("--no-ring",), {"SWARMLM_API_RING": "on"}, False)])
def test_ring_is_on_unless_switched_off_on_the_command_line_or_in_the_environment(argv, env, ring, tmp_path):
    assert resolve(_parse("--peers", PEER, *argv), {"SWARMLM_HOME": str(tmp_path), **env}).ring is ring


def test_bad_settings_name_the_flag_or_variable_to_fix():
    with pytest.raises(ConfigError, match="SWARMLM_API_PORT"):
        resolve(_parse("--peers", PEER), {"SWARMLM_API_PORT": "eighty"})
    with pytest.raises(ConfigError, match="--peers"):
        resolve(_parse(), {})
    with pytest.raises(ConfigError, match="not a multiaddr"):
        resolve(_parse("--peers", "localhost:8000"), {})
    with pytest.raises(ConfigError, match="SWARMLM_API_RING: not a boolean"):
        resolve(_parse("--peers", PEER), {"SWARMLM_API_RING": "sometimes"})


def test_the_cli_reports_a_bad_setting_as_a_user_error(cli_env):
    proc = subprocess.run(SWARMLM + ["api", "--peers", PEER, "--port", "70000"], capture_output=True, text=True,
                          env=cli_env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --port must be in 0..65535")


def test_the_limits_default_to_shares_of_the_workers_and_of_the_open_file_limit(tmp_path):
    import resource

    s = resolve(_parse("--peers", PEER, "--max-concurrency", "6"), {"SWARMLM_HOME": str(tmp_path)})
    assert s.max_per_client == 3 and s.max_queue == 64 and s.trusted_proxy == []
    assert s.max_connections == resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2
    assert resolve(_parse("--peers", PEER, "--max-concurrency", "1"), {}).max_per_client == 1
    with pytest.raises(ConfigError, match="--head-timeout must be > 0"):
        resolve(_parse("--peers", PEER, "--head-timeout", "0"), {})
    with pytest.raises(ConfigError, match="--max-queue must be >= 1"):
        resolve(_parse("--peers", PEER), {"SWARMLM_API_MAX_QUEUE": "0"})
