"""Node settings: one declaration per option feeds the flags, `SWARMLM_*` variables and the TOML file.

Precedence: command-line flag > environment variable > config file > default. An empty value
(`SWARMLM_PORT=`, `port = ""`) means "not set", as systemd environment files and the commented
file `swarmlm node init` writes expect. The same table produces `--help`, that file, and the
typed `NodeConfig`, so the CLI and the class can never disagree on a default.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from shards.paths import swarmlm_home

from .errors import ConfigError


@dataclass(frozen=True)
class Option:
    name: str  # snake_case; flag --name-with-dashes, env SWARMLM_NAME, TOML key name
    kind: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    multiple: bool = False  # a list: repeat the flag, or space/comma-separate in env

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SWARMLM_" + self.name.upper()


def parse_bool(value: str | bool) -> bool:
    """A switch from a flag, variable or file: 1/true/yes/on or 0/false/no/off (empty: false)."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _ring(value: str | bool) -> str:
    """`--ring`: "on", "off", or "auto" (hold the head only where the node serves every block)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return "on" if parse_bool(value) else "off"
    except ValueError:
        raise ValueError(f"not on, off or auto: {value!r}") from None


OPTIONS: tuple[Option, ...] = (
    Option("model", str, "smollm2-135m-instruct", "model store folder or catalogued name"),
    Option("blocks", str, "auto", "blocks to serve, A:B (half-open), or 'auto' for the weakest-covered span"),
    Option("num_blocks", int, None, "with --blocks auto: how many blocks (default: what --max-memory holds)"),
    Option("initial_peers", str, [], "multiaddrs of swarm peers to join (repeatable)", multiple=True),
    Option("new_swarm", parse_bool, False, "start a new swarm instead of joining one (no --initial-peers)"),
    Option("host", str, "0.0.0.0", "address to listen on (127.0.0.1 keeps the node local)"),
    Option("port", int, 0, "TCP port to listen on (0: any free port)"),
    Option("reachability", str, "auto", "whether peers can dial this node: 'auto' asks a peer to dial it back; "
                                        "a private node is reached through relay circuits on public peers",
           choices=("auto", "public", "private")),
    Option("relay_service", parse_bool, True, "when reachable, relay circuits for private nodes (within per-peer "
                                              "limits; --no-relay-service opts out)"),
    Option("state_dir", Path, None, "where the node keeps identity, ledger and caches "
                                    "(default $SWARMLM_HOME/node)"),
    Option("identity", Path, None, "Ed25519 identity key file (default STATE_DIR/identity.key)"),
    Option("ledger", Path, None,
           "ledger file (default STATE_DIR/ledger.sqlite; 'off' runs without one, to measure its cost)"),
    Option("device", str, "cpu", "cpu, cuda or cuda:N"),
    Option("dtype", str, None, "compute dtype (default: float32 on cpu, bfloat16 on cuda)",
           choices=("float32", "bfloat16", "float16")),
    Option("quant", str, None, "serve weights quantized by this scheme, derived from --model on first start and "
                               "cached (or point --model at a derived store); clients accept int8 by default, "
                               "nf4 and q4_1 when asked", choices=("int8", "nf4", "q4_1")),
    Option("threads", int, 0, "compute threads (0: all cores); nodes sharing a machine should split its cores"),
    Option("cache_tokens", int, 8192, "KV-cache pool size in tokens, over all sessions (paged; see --page-tokens)"),
    Option("page_tokens", int, 64, "tokens per KV-cache page: sessions take pages as they grow"),
    Option("grow_cache", parse_bool, False, "grow the KV-cache pool to what --max-memory holds beside the node's "
                                            "blocks (and ring head), never under --cache-tokens: more sessions at "
                                            "once where memory is to spare; with --blocks auto the span leaves room "
                                            "for at least 32768 tokens of cache, or what half a block's bytes hold if "
                                            "fewer; on a GPU the pool is allocated at start, on CPU its pages take "
                                            "memory once used"),
    Option("max_memory", str, None, "memory budget for blocks and cache, e.g. 2GiB (default: 80%% of free at start)"),
    Option("public_name", str, "", "a name shown in swarm status"),
    Option("announce_period", float, 30.0, "seconds between DHT announcements (records expire at three times this)"),
    Option("witness_period", float, 120.0, "seconds between checks of the peers' ledgers (witnessing)"),
    Option("max_batch", int, 8, "largest batch a session or forward may ask for"),
    Option("max_step_tokens", int, 2048, "most tokens one step or forward may carry"),
    Option("max_session_length", int, 8192, "longest session a client may open, in tokens"),
    Option("session_timeout", float, 300.0, "seconds an idle session keeps its cache"),
    Option("evict_idle_after", float, 30.0, "when the cache is full, sessions idle this many seconds lose their "
                                            "cache to active ones (least recently used first)"),
    Option("max_batch_tokens", int, 512, "most tokens computed in one batched forward over all sessions"),
    Option("prefill_chunk", int, 128, "long prompts and forwards run in chunks of this many tokens, so others' "
                                      "steps wait at most one chunk"),
    Option("ring", _ring, "off", "hold the embeddings and LM head, so the node can close a ring: sample the "
                                 "next token, or embed it (issue 25). 'auto': only where the node serves every "
                                 "block with the head counted in its memory, as it then rings alone (elsewhere the "
                                 "head takes memory from blocks); a bare --ring is 'on'"),
    Option("batching", parse_bool, True, "batch steps of different sessions into one forward (off: one at a time)"),
    Option("peer_max_streams", int, 32, "streams one client peer may hold open at once"),
    Option("peer_max_sessions", int, 16, "sessions one client peer may hold open at once"),
    Option("peer_cache_tokens", int, 0, "KV-cache tokens one client peer's sessions may hold (0: half the pool)"),
    Option("peer_opens_per_minute", int, 240, "sessions one client peer may open per minute (bursting to as many)"),
    Option("peer_queue_tokens", int, 8192, "tokens of one client peer's work that may wait for compute"),
    Option("read_budget", str, "512MiB", "frame bytes all streams together may be reading at once"),
    Option("drain_grace", float, 30.0, "seconds live sessions get to finish on shutdown or move"),
    Option("rebalance_period", float, 60.0, "seconds between coverage checks with --blocks auto (0: never move)"),
    Option("throughput", str, "auto", "announced tokens/s: 'auto' measures once per span, dtype and device, "
                                      "cached for every node of this machine ($SWARMLM_HOME/throughput.json); "
                                      "or a number"),
    Option("upload_mbps", float, 0.0, "your upload speed in Mbit/s (a speed test's figure), folded into the "
                                      "tokens/s you announce: each token's output leaves on your uplink, so "
                                      "clients then price a slow home uplink as they price slow compute "
                                      "(0: not priced)"),
    Option("metrics_port", int, None, "serve Prometheus metrics on this port (default: off)"),
    Option("metrics_host", str, "127.0.0.1", "address for the metrics endpoint"),
    Option("log_format", str, "text", "log line format", choices=("text", "json")),
)
_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class NodeConfig:
    model: str
    blocks: str
    num_blocks: int | None
    initial_peers: list[str]
    new_swarm: bool
    host: str
    port: int
    reachability: str
    relay_service: bool
    state_dir: Path
    identity: Path
    ledger: Path
    device: str
    dtype: str
    quant: str | None
    threads: int
    cache_tokens: int
    page_tokens: int
    grow_cache: bool
    max_memory: str | None
    public_name: str
    announce_period: float
    witness_period: float
    max_batch: int
    max_step_tokens: int
    max_session_length: int
    session_timeout: float
    evict_idle_after: float
    max_batch_tokens: int
    prefill_chunk: int
    ring: str  # "on", "off", "auto"
    batching: bool
    peer_max_streams: int
    peer_max_sessions: int
    peer_cache_tokens: int
    peer_opens_per_minute: int
    peer_queue_tokens: int
    read_budget: str
    drain_grace: float
    rebalance_period: float
    throughput: str
    upload_mbps: float
    metrics_port: int | None
    metrics_host: str
    log_format: str
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # option -> flag/env/file/default

    @property
    def block_range(self) -> tuple[int, int] | None:
        """(start, end) for an explicit A:B, None for auto."""
        if self.blocks == "auto":
            return None
        start, _, end = self.blocks.partition(":")
        return int(start), int(end)

    @property
    def read_budget_bytes(self) -> int:
        return parse_size(self.read_budget)


def parse_size(text: str) -> int:
    """'2GiB', '512MiB', '1.5GB', '1000000' -> bytes."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9,
             "tb": 10**12, "b": 1}
    t = text.strip().lower().replace(" ", "")
    for unit, factor in units.items():
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * factor)
    return int(float(t))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option as a flag whose default is None, so 'not given' is visible for precedence."""
    parser.add_argument("--config", type=Path, help="TOML file with any of these options (see `node init`) "
                                                    "[env SWARMLM_CONFIG]")
    for o in OPTIONS:
        if o.kind is parse_bool:  # --no-X too, so a flag can override a true from the environment or file
            parser.add_argument(o.flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{o.help} (default: {str(o.default).lower()}) [env {o.env}]")
            continue
        if o.kind is _ring:  # a bare flag is "on", and --no-ring overrides the environment or file
            parser.add_argument(o.flag, nargs="?", const="on", default=None, choices=("on", "off", "auto"),
                                help=f"{o.help} (default: {o.default}) [env {o.env}]")
            parser.add_argument("--no-" + o.flag[2:], dest=o.name, action="store_const", const="off",
                                help=f"the same as {o.flag} off")
            continue
        parser.add_argument(o.flag, type=str, default=None, choices=o.choices, nargs="+" if o.multiple else None,
                            action="extend" if o.multiple else "store", metavar=o.name.upper(),
                            help=f"{o.help} (default: {_shown(o)}) [env {o.env}]")


def _shown(o: Option) -> str:
    return "none" if o.default in (None, [], "") else str(o.default)


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Merge flag > env > file > default into a validated NodeConfig."""
    environ = os.environ if environ is None else environ
    config_path = getattr(args, "config", None) or environ.get("SWARMLM_CONFIG")
    file_values = _read_toml(Path(config_path).expanduser()) if config_path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for o in OPTIONS:
        flag = getattr(args, o.name, None)
        if _is_set(flag):
            raw, source = flag, "flag"
        elif _is_set(environ.get(o.env)):
            raw = environ[o.env].replace(",", " ").split() if o.multiple else environ[o.env]
            source = "env"
        elif _is_set(file_values.get(o.name)):
            raw, source = file_values[o.name], "file"
        else:
            values[o.name], sources[o.name] = o.default, "default"
            continue
        values[o.name], sources[o.name] = _convert(o, raw, source), source
    return _finish(values, sources)


def _is_set(value: Any) -> bool:
    """Absent, empty and blank values all mean 'not set here': look further down the precedence."""
    return value is not None and value != [] and not (isinstance(value, str) and not value.strip())


def _where(o: Option, source: str) -> str:
    """How the user wrote the option, so an error points at the flag, variable or key to fix."""
    return {"flag": o.flag, "env": o.env, "file": f"config key {o.name!r}"}.get(source, o.name)


# What a TOML value may be for each option kind: only types that convert without loss (not 3.7 -> 3, true -> 1).
_TOML_TYPES: dict[Callable[[str], Any], tuple[tuple[type, ...], str]] = {
    str: ((str, int, float), "a string"), int: ((int,), "an integer"), float: ((int, float), "a number"),
    parse_bool: ((bool,), "true or false"), Path: ((str,), "a path (a string)"),
    _ring: ((bool, str), 'true, false or "auto"')}


def _check_toml_type(o: Option, raw: Any) -> None:
    if o.multiple:
        ok = isinstance(raw, str) or isinstance(raw, list) and all(isinstance(x, str) for x in raw)
        expected = "a string or a list of strings"
    else:
        allowed, expected = _TOML_TYPES[o.kind]
        ok = isinstance(raw, allowed) and (o.kind is _ring or isinstance(raw, bool) == (o.kind is parse_bool))
    if not ok:
        raise ConfigError(f"{_where(o, 'file')} must be {expected}, got {raw!r}")


def _convert(o: Option, raw: Any, source: str) -> Any:
    if source == "file":
        _check_toml_type(o, raw)
    try:
        if o.multiple:
            return [o.kind(x) for x in (raw if isinstance(raw, list) else [raw])]
        value = o.kind(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{_where(o, source)}: {e}") from None
    if o.choices and value not in o.choices:
        raise ConfigError(f"{_where(o, source)} must be one of {', '.join(o.choices)}, got {value!r}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    if isinstance(data.get("node"), dict):  # options under [node]; nothing else belongs in the file
        node, stray = data["node"], sorted(set(data) - {"node"})
    else:
        node, stray = data, []
    unknown = stray + sorted(set(node) - set(_BY_NAME))
    if unknown:
        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, _BY_NAME, 1)) else k
                 for k in unknown]
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(hints)}; "
                          "`swarmlm node run --help` lists them all")
    return node


_RANGES: tuple[tuple[str, float, float | None], ...] = (
    ("num_blocks", 1, None), ("cache_tokens", 1, None), ("page_tokens", 1, 4096), ("evict_idle_after", 0, None),
    ("max_batch_tokens", 1, None), ("prefill_chunk", 1, None), ("peer_max_streams", 1, None),
    ("peer_max_sessions", 1, None), ("peer_cache_tokens", 0, None), ("peer_opens_per_minute", 1, None),
    ("peer_queue_tokens", 1, None),
    ("max_batch", 1, None), ("max_step_tokens", 1, None),
    ("max_session_length", 1, None), ("drain_grace", 0, None), ("rebalance_period", 0, None),
    ("witness_period", 1, None),
    ("port", 0, 65535), ("metrics_port", 0, 65535), ("threads", 0, None))


def _finish(values: dict[str, Any], sources: dict[str, str]) -> NodeConfig:
    state = Path(values["state_dir"] or swarmlm_home() / "node").expanduser()
    values["state_dir"] = state
    values["identity"] = Path(values["identity"] or state / "identity.key").expanduser()
    values["ledger"] = Path(values["ledger"] or state / "ledger.sqlite").expanduser()
    if values["dtype"] is None:
        values["dtype"] = "float32" if values["device"] == "cpu" else "bfloat16"

    def where(name: str) -> str:
        return _where(_BY_NAME[name], sources[name])

    blocks = values["blocks"]
    if blocks != "auto":
        start, sep, end = blocks.partition(":")
        if not (sep and start.isdigit() and end.isdigit() and int(start) < int(end)):
            raise ConfigError(f"{where('blocks')} must be A:B with A < B (e.g. 0:10) or 'auto', got {blocks!r}")
    if values["initial_peers"] and values["new_swarm"]:
        raise ConfigError(f"{where('new_swarm')} starts a swarm of its own, but {where('initial_peers')} joins "
                          "one: drop one of them")
    for name, low, high in _RANGES:
        value = values[name]
        if value is not None and not (value >= low and (high is None or value <= high)):  # `not`: NaN fails too
            bounds = f">= {low}" if high is None else f"in {low}..{high}"
            raise ConfigError(f"{where(name)} must be {bounds}, got {value}")
    for name in ("read_budget", "max_memory"):
        if values[name] is not None:
            try:
                parse_size(values[name])
            except ValueError:
                raise ConfigError(f"{where(name)} must be a size like 512MiB or 2GB, got {values[name]!r}") from None
    if values["max_batch_tokens"] < values["max_batch"]:
        raise ConfigError(f"{where('max_batch_tokens')} must be at least {where('max_batch')} "
                          f"({values['max_batch']}), so every row of a batch fits one forward")
    if len(values["public_name"]) > 64 or not values["public_name"].isprintable():
        raise ConfigError(f"{where('public_name')} must be at most 64 printable characters")
    if values["throughput"] != "auto":
        try:
            tps = float(values["throughput"])
        except ValueError:
            tps = float("nan")
        if not 0 < tps <= 1e6:
            raise ConfigError(f"{where('throughput')} must be 'auto' or tokens/s in (0, 1000000], "
                              f"got {values['throughput']!r}")
    if not 0 <= values["upload_mbps"] <= 1e6:
        raise ConfigError(f"{where('upload_mbps')} must be Mbit/s in 0..1000000, got {values['upload_mbps']}")
    for name in ("announce_period", "session_timeout"):
        if not values[name] > 0:
            raise ConfigError(f"{where(name)} must be > 0, got {values[name]}")
    return NodeConfig(**values, sources=sources)


def commented_toml(values: Mapping[str, Any] | None = None) -> str:
    """The file `swarmlm node init` writes: every option, commented, with its default."""
    values = values or {}
    lines = ["# SwarmLM node configuration. Precedence: flag > SWARMLM_* environment > this file > default.",
             "# Uncomment and edit what you need; `swarmlm node run --config THIS_FILE` reads it.",
             '# An empty value ("") means the default.', "", "[node]"]
    for o in OPTIONS:
        lines.append(f"# {o.help.replace('%%', '%')}")
        value = values.get(o.name, o.default)
        prefix = "" if o.name in values else "# "
        lines.append(f"{prefix}{o.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
