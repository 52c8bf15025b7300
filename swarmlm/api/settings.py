"""The gateway's settings: each from its flag, else its `SWARMLM_API_*` variable, else the default.

As for nodes, an empty value counts as not set (systemd environment files leave keys blank), so a
deployment can keep the API key in the environment and everything else on the command line.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from node.config import parse_bool
from node.errors import ConfigError
from shards.catalog import DEFAULT_MODEL
from shards.paths import swarmlm_home


@dataclass(frozen=True)
class Setting:
    name: str  # flag --name-with-dashes; variable SWARMLM_API_NAME (api_key: SWARMLM_API_KEY)
    kind: Callable[[str], Any]
    default: Any
    help: str
    multiple: bool = False  # repeat the flag / list several after it; space- or comma-separated in the variable
    switch: bool = False  # --name / --no-name, no value (the variable: 1/true/yes/on or 0/false/no/off)
    metavar: str | None = None
    shown: str | None = None  # the default as --help shows it, where it is computed

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SWARMLM_API_" + self.name.upper().removeprefix("API_")


SETTINGS: tuple[Setting, ...] = (
    Setting("peers", str, [], "multiaddrs of swarm peers to join", multiple=True, metavar="MADDR"),
    Setting("model", str, [DEFAULT_MODEL], "models to serve: store folders or catalogued names", multiple=True,
            metavar="M"),
    Setting("host", str, "127.0.0.1", "address to listen on (0.0.0.0 exposes the gateway to the network)"),
    Setting("port", int, 8000, "TCP port (0: any free port; the 'ready' line names it)"),
    Setting("api_key", str, None, "require 'Authorization: Bearer KEY' on /v1 and /swarm requests", metavar="KEY"),
    Setting("identity", Path, None, "client key that signs receipts", metavar="PATH",
            shown="$SWARMLM_HOME/api/identity.key"),
    Setting("ledger", Path, None, "where the gateway logs the receipts it signs", metavar="PATH",
            shown="$SWARMLM_HOME/api/ledger.sqlite"),
    Setting("default_max_tokens", int, 512, "completion tokens when a request sets no max_tokens", metavar="N"),
    Setting("max_concurrency", int, 16, "generations running at once; later requests wait for a worker, in turn "
            "across clients", metavar="N"),
    Setting("max_per_client", int, 0, "generations one client (by address) runs at once, so one client never "
            "holds every worker; 0: half --max-concurrency", metavar="N", shown="half --max-concurrency"),
    Setting("max_queue", int, 64, "requests waiting for a worker, served in turn across clients; beyond it 429 "
            "with Retry-After", metavar="N"),
    Setting("max_connections", int, 0, "open HTTP connections; more are closed at once (503), so the open-file "
            "limit is never reached; 0: half the open-file limit", metavar="N", shown="half the open-file limit"),
    Setting("max_client_connections", int, 0, "open HTTP connections from one address (reverse proxies named "
            "with --trusted-proxy excepted); 0: an eighth of --max-connections", metavar="N",
            shown="an eighth of --max-connections"),
    Setting("head_timeout", float, 10.0, "seconds a connection has to send a request's head, from opening or "
            "from its previous answer; then it is closed (against slowloris)", metavar="S"),
    Setting("body_timeout", float, 30.0, "seconds a request has to send its whole body after its head (408)",
            metavar="S"),
    Setting("send_timeout", float, 30.0, "seconds an answer may wait for a client that stopped reading (its "
            "buffers are full); then the connection is closed and the generation stopped", metavar="S"),
    Setting("trusted_proxy", str, [], "addresses of reverse proxies whose X-Forwarded-For/-Proto are believed "
            "(the client address they name gets the fair share)", multiple=True, metavar="ADDR"),
    Setting("device", str, "cpu", "cpu, cuda or cuda:N for the head shard (embeddings and LM head)"),
    Setting("ring", parse_bool, True, "close rings where the chain's first and last nodes run --ring (a node "
            "serving every block rings alone): the last node samples each token and sends it on, the gateway "
            "checks each one off the path; answers are the same (--no-ring where the gateway shares the nodes' "
            "cores)", switch=True),
    # Streams: how long a token may wait for the swarm to recover, and how often a waiting stream speaks.
    Setting("recover_timeout", float, 30.0, "seconds a request waits for nodes to cover the model, at its start "
            "or after a node failed mid-answer, before its error (503 or an error event)", metavar="S"),
    Setting("keepalive", float, 15.0, "seconds of silence after which a stream sends an SSE comment, so proxies "
            "and clients do not time out while it waits", metavar="S"),
    Setting("allowed_host", str, [], "host names the gateway answers to besides localhost and --host ('*': any; "
            "other Host headers get 421, against DNS rebinding)", multiple=True, metavar="NAME"),
    Setting("cors_origin", str, [], "browser origins allowed to call the gateway cross-site, e.g. "
            "https://app.example (others get 403)", multiple=True, metavar="ORIGIN"),
)


@dataclass(frozen=True)
class ApiSettings:
    peers: list[str]
    model: list[str]
    host: str
    port: int
    api_key: str | None
    identity: Path
    ledger: Path
    default_max_tokens: int
    max_concurrency: int
    max_per_client: int
    max_queue: int
    max_connections: int
    max_client_connections: int
    head_timeout: float
    body_timeout: float
    send_timeout: float
    trusted_proxy: list[str]
    device: str
    ring: bool
    recover_timeout: float
    keepalive: float
    allowed_host: list[str]
    cors_origin: list[str]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every setting as a flag defaulting to None, so 'not given' stays visible for precedence."""
    for s in SETTINGS:
        if s.switch:
            parser.add_argument(s.flag, dest=s.name, default=None,
                                action=argparse.BooleanOptionalAction,
                                help=f"{s.help} (default: {'on' if s.default else 'off'}) [env {s.env}]")
            continue
        shown = s.shown or ("none" if s.default in (None, []) else
                            " ".join(map(str, s.default)) if s.multiple else s.default)
        parser.add_argument(s.flag, dest=s.name, default=None, nargs="+" if s.multiple else None,
                            action="extend" if s.multiple else "store", metavar=s.metavar or s.name.upper(),
                            help=f"{s.help} (default: {shown}) [env {s.env}]")


def _is_set(value: Any) -> bool:
    return value is not None and value != [] and not (isinstance(value, str) and not value.strip())


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ApiSettings:
    """flag > SWARMLM_API_* > default, converted and checked; ConfigError names the flag or variable to fix."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in SETTINGS:
        flag, env = getattr(args, s.name, None), environ.get(s.env)
        if _is_set(flag):
            raw, where = flag, s.flag
        elif _is_set(env):
            raw, where = (env.replace(",", " ").split() if s.multiple else env), s.env
        else:
            values[s.name] = s.default
            continue
        try:
            values[s.name] = [s.kind(x) for x in raw] if s.multiple else s.kind(raw)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    home = swarmlm_home() / "api"
    values["identity"] = Path(values["identity"] or home / "identity.key").expanduser()
    values["ledger"] = Path(values["ledger"] or home / "ledger.sqlite").expanduser()
    values["max_per_client"] = values["max_per_client"] or max(1, values["max_concurrency"] // 2)
    values["max_connections"] = values["max_connections"] or max(1, _open_file_limit() // 2)
    values["max_client_connections"] = values["max_client_connections"] or max(1, values["max_connections"] // 8)
    settings = ApiSettings(**values)
    _check(settings)
    return settings


def _check(s: ApiSettings) -> None:
    if not s.peers:
        raise ConfigError("give the swarm to join: --peers MADDR… (or SWARMLM_API_PEERS)")
    bad = [p for p in s.peers if not p.startswith("/")]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not a multiaddr (like /ip4/127.0.0.1/tcp/PORT/p2p/PEER_ID)")
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {s.port}")
    for name in ("default_max_tokens", "max_concurrency", "max_per_client", "max_queue", "max_connections",
                 "max_client_connections"):
        if getattr(s, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(s, name)}")
    for name in ("head_timeout", "body_timeout", "send_timeout", "recover_timeout", "keepalive"):
        if not getattr(s, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0 seconds, got {getattr(s, name)}")


def _open_file_limit() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
