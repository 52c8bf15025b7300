"""`swarmlm node run` options resolve flag > SWARMLM_* environment > TOML file > default, as --help says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.config import OPTIONS, NodeConfig, commented_toml, resolve
from node.errors import ConfigError
from swarmlm.cli import build_parser


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARMLM_HOME", str(tmp_path / "home"))


def run_config(argv: list[str], env: dict[str, str] | None = None, toml: str | None = None,
               tmp_path: Path | None = None) -> NodeConfig:
    """Resolve exactly as `swarmlm node run ARGV` would, with `env` as the whole environment."""
    if toml is not None:
        assert tmp_path is not None
        (tmp_path / "node.toml").write_text(toml)
        argv = [*argv, "--config", str(tmp_path / "node.toml")]
    args = build_parser().parse_args(["node", "run", *argv])
    return resolve(args, env or {})


# option, flag arguments, env value, TOML value, and the value each layer yields (flag, env, file, default)
LAYERS: list[tuple[str, list[str], str, str, tuple[Any, Any, Any, Any]]] = [
    ("public_name", ["--public-name", "flag"], "env", '"file"', ("flag", "env", "file", "")),
    ("dtype", ["--dtype", "float16"], "bfloat16", '"float32"', ("float16", "bfloat16", "float32", "float32")),
    ("port", ["--port", "3"], "2", "1", (3, 2, 1, 0)),
    ("announce_period", ["--announce-period", "3.5"], "2.5", "1", (3.5, 2.5, 1.0, 30.0)),
    ("new_swarm", ["--new-swarm"], "0", "true", (True, False, True, False)),
    ("initial_peers", ["--initial-peers", "/f1", "/f2"], "/e1, /e2", '["/t1"]',
     (["/f1", "/f2"], ["/e1", "/e2"], ["/t1"], [])),
    ("state_dir", ["--state-dir", "/flag"], "/env", '"/file"', (Path("/flag"), Path("/env"), Path("/file"), None)),
]


@pytest.mark.parametrize("name, flag, env, toml, expected", LAYERS, ids=[case[0] for case in LAYERS])
def test_each_layer_overrides_the_ones_below(name, flag, env, toml, expected, tmp_path):
    env_name = "SWARMLM_" + name.upper()
    file_text = f"[node]\n{name} = {toml}\n"
    layers = [(flag, {env_name: env}, file_text), ([], {env_name: env}, file_text), ([], {}, file_text),
              ([], {}, None)]
    for (argv, environ, text), want, source in zip(layers, expected, ("flag", "env", "file", "default")):
        config = run_config(argv, environ, text, tmp_path)
        if name == "state_dir" and want is None:
            want = tmp_path / "home" / "node"
        assert (getattr(config, name), config.sources[name]) == (want, source)


def test_no_flag_turns_off_a_boolean_set_in_env_or_file(tmp_path):
    config = run_config(["--no-new-swarm"], {"SWARMLM_NEW_SWARM": "yes"}, "new_swarm = true", tmp_path)
    assert config.new_swarm is False and config.sources["new_swarm"] == "flag"


@pytest.mark.parametrize("argv, env, toml, want", [
    (["--ring"], {}, None, "on"), (["--ring", "auto"], {}, None, "auto"), ([], {}, None, "off"),
    ([], {"SWARMLM_RING": "AUTO"}, None, "auto"), ([], {"SWARMLM_RING": "yes"}, None, "on"),
    ([], {}, "ring = true", "on"), ([], {}, 'ring = "auto"', "auto"), ([], {}, "ring = false", "off"),
    (["--no-ring"], {"SWARMLM_RING": "auto"}, None, "off"), (["--ring", "off"], {}, "ring = true", "off")])
def test_ring_is_on_off_or_auto_from_every_layer(argv, env, toml, want, tmp_path):
    assert run_config(argv, env, toml, tmp_path).ring == want


def test_paths_derive_from_the_resolved_state_dir(tmp_path):
    config = run_config([], {"SWARMLM_STATE_DIR": str(tmp_path / "s")}, 'identity = "~/id.key"', tmp_path)
    assert config.ledger == tmp_path / "s" / "ledger.sqlite"
    assert config.identity == Path.home() / "id.key"


def test_config_file_from_env_and_empty_values_fall_through(tmp_path):
    (tmp_path / "n.toml").write_text('port = 7\nmetrics_port = ""\n')
    config = run_config([], {"SWARMLM_CONFIG": str(tmp_path / "n.toml"), "SWARMLM_PORT": "",
                             "SWARMLM_METRICS_PORT": " "})
    assert (config.port, config.sources["port"]) == (7, "file")
    assert (config.metrics_port, config.sources["metrics_port"]) == (None, "default")


def test_the_commented_file_resolves_to_the_defaults_even_fully_uncommented(tmp_path):
    text = commented_toml()
    uncommented = "\n".join(line[2:] if line.startswith("# ") and " = " in line else line
                            for line in text.splitlines())
    assert run_config([], {}, text, tmp_path) == run_config([], {}, uncommented, tmp_path) == run_config([], {})
    assert sum(" = " in line for line in uncommented.splitlines() if not line.startswith("#")) == len(OPTIONS)


@pytest.mark.parametrize("argv, env, toml, named", [
    (["--port", "eighty"], {}, None, "--port"),
    ([], {"SWARMLM_PORT": "eighty"}, None, "SWARMLM_PORT"),
    ([], {}, 'port = "eighty"', "config key 'port'"),
    ([], {}, "port = 3.7", "config key 'port' must be an integer"),
    ([], {}, "port = true", "config key 'port' must be an integer"),
    ([], {}, "announce_period = false", "config key 'announce_period' must be a number"),
    ([], {}, 'new_swarm = "yes"', "config key 'new_swarm' must be true or false"),
    ([], {}, "initial_peers = [1, 2]", "config key 'initial_peers' must be a string or a list of strings"),
    ([], {"SWARMLM_NEW_SWARM": "maybe"}, None, "SWARMLM_NEW_SWARM"),
    ([], {"SWARMLM_RING": "maybe"}, None, "SWARMLM_RING: not on, off or auto"),
    ([], {}, 'ring = "sometimes"', "config key 'ring': not on, off or auto"),
    ([], {}, "ring = 1", "config key 'ring' must be true, false or \"auto\""),
    ([], {"SWARMLM_LOG_FORMAT": "xml"}, None, "SWARMLM_LOG_FORMAT must be one of text, json"),
    ([], {}, 'dtype = "int8"', "config key 'dtype' must be one of"),
    ([], {}, 'blocks = "3"', "config key 'blocks' must be A:B"),
    (["--blocks", "5:2"], {}, None, "--blocks must be A:B"),
    ([], {"SWARMLM_CACHE_TOKENS": "0"}, None, "SWARMLM_CACHE_TOKENS must be >= 1"),
    (["--metrics-port", "70000"], {}, None, "--metrics-port must be in 0..65535"),
    ([], {}, "session_timeout = 0", "config key 'session_timeout' must be > 0"),
    ([], {"SWARMLM_ANNOUNCE_PERIOD": "nan"}, None, "SWARMLM_ANNOUNCE_PERIOD must be > 0"),
    (["--upload-mbps", "-5"], {}, None, "--upload-mbps must be Mbit/s in 0..1000000"),
    ([], {"SWARMLM_UPLOAD_MBPS": "nan"}, None, "SWARMLM_UPLOAD_MBPS must be Mbit/s"),
    (["--new-swarm"], {"SWARMLM_INITIAL_PEERS": "/ip4/1.2.3.4"}, None, "--new-swarm starts a swarm of its own, "
                                                                       "but SWARMLM_INITIAL_PEERS joins one"),
])
def test_bad_values_name_the_flag_variable_or_key_to_fix(argv, env, toml, named, tmp_path):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        run_config(argv, env, toml, tmp_path)


@pytest.mark.parametrize("toml, message", [
    ("prot = 1", r"unknown option\(s\) prot \(did you mean port\?\)"),
    ("port = 1\n[other]\nx = 1", r"unknown option\(s\) other"),
    ("port = 2\n[node]\nport = 1", r"unknown option\(s\) port"),  # a key outside [node] would be ignored
    ("port = ", "is not valid TOML"),
])
def test_a_config_file_with_unknown_keys_or_bad_syntax_is_refused(toml, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run_config([], {}, toml, tmp_path)


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        run_config(["--config", str(tmp_path / "nope.toml")])


def test_help_names_every_variable_and_the_precedence(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["node", "run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "precedence: flag > environment > file > default" in text
    assert "SWARMLM_CONFIG" in text
    missing = [o.env for o in OPTIONS if o.env not in text]
    assert not missing
