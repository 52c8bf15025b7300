"""`swarmlm node status`: one node's uptime, span, sessions, tokens served and ledger height.

Reach it by multiaddr (`--peer`), or on this machine through the runtime file a running node
writes beside its identity (`--identity`, or the one a config file and SWARMLM_* variables name:
`--config`; default: the default state folder's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

from . import config as node_config
from .errors import NodeError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="one node's uptime, span, sessions, tokens served, ledger height")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--identity", type=Path, help="a local node's identity file "
                                                     "(default $SWARMLM_HOME/node/identity.key)")
    where.add_argument("--config", type=Path, help="the node's TOML config (as given to `node run --config`): "
                                                   "its state_dir or identity says where the node is "
                                                   "[env SWARMLM_CONFIG]")
    where.add_argument("--peer", metavar="MADDR", help="a node's multiaddr, ending in /p2p/PEER_ID")
    p.add_argument("--json", action="store_true", help="print the node's info as JSON")
    p.set_defaults(func=_status)


def _target(args: argparse.Namespace) -> tuple[str, list[str], int | None]:
    """(peer ID, multiaddrs to dial, local status port if any) of the node to ask."""
    if args.peer:
        if "/p2p/" not in args.peer:
            raise NodeError(f"{args.peer} has no /p2p/PEER_ID part; copy a node's 'maddr' line")
        return args.peer.rsplit("/p2p/", 1)[1], [args.peer], None
    identity = args.identity or _configured_identity(args.config)
    runtime = identity.parent / "node.json"
    try:
        info = json.loads(runtime.read_text())
    except FileNotFoundError:
        raise NodeError(f"no running node found beside {identity} (no {runtime}); is it started? "
                        "For a remote node use --peer MADDR") from None
    return info["peer_id"], info["maddrs"], info.get("status_port")


def _configured_identity(config: Path | None) -> Path:
    """The identity file `node run` would use with this config file and environment (default state folder's)."""
    return node_config.resolve(argparse.Namespace(config=config)).identity


async def serve_local(info: Callable[[], dict[str, Any]]) -> asyncio.Server:
    """Answer `node status` on this machine over loopback TCP: one JSON line of `info()` per connection.
    Dialling the node over libp2p instead would cost the command hivemind's and torch's imports (seconds)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await asyncio.get_running_loop().run_in_executor(None, info)  # it reads the ledger
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the asker left
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def _ask_local(port: int) -> tuple[float, dict[str, Any]] | None:
    """(rtt, info) from a node on this machine's status port; None when nothing answers there."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as conn, conn.makefile("rb") as f:
            line = f.readline(1 << 20)
    except OSError:
        return None
    try:
        info = json.loads(line)
    except ValueError:
        return None
    return (time.perf_counter() - started, info) if isinstance(info, dict) else None


def _status(args: argparse.Namespace) -> int:
    peer, maddrs, port = _target(args)
    answer = _ask_local(port) if port else None
    if answer is None or answer[1].get("peer_id") != peer:  # no local port, or another process holds it now
        from routing.client import SwarmClient  # it imports hivemind and torch (seconds)

        client = SwarmClient(maddrs, request_timeout=15)
        try:
            rtt, reply = client.run(client.ping(peer))
            answer = rtt, reply.raw
        finally:
            client.close()
    rtt, info = answer
    if args.json:
        print(json.dumps({**info, "rtt_ms": round(rtt * 1000, 2)}, indent=2))
        return 0
    _print(info, rtt)
    return 0


def _print(info: dict[str, Any], rtt: float) -> None:
    load = info.get("load", {})
    rows = [("peer", info.get("peer_id")), ("name", info.get("name") or "-"), ("state", info.get("state")),
            ("uptime", _duration(info.get("uptime_s", 0))), ("model", info.get("root")),
            ("blocks", f"{info.get('start')}:{info.get('end')}"),
            ("compute", f"{info.get('dtype')} on {info.get('device')}, {info.get('throughput')} tok/s"),
            ("reach", info.get("reachability", "-")),
            ("sessions", load.get("sessions")),
            ("cache", f"{load.get('cache_tokens_used')} used, {load.get('cache_tokens_free')} free tokens"),
            ("served", f"{info.get('tokens_served')} tokens"),
            ("ledger", f"{info.get('ledger_size')} entries{_ledger_health(info.get('ledger_health'))}"),
            ("version", f"swarmlm {info.get('versions', {}).get('swarmlm')}, protocol {info.get('v')}"),
            ("rtt", f"{rtt * 1000:.1f} ms")]
    for k, v in rows:
        print(f"{k:<9} {v}")


def _ledger_health(health: Any) -> str:
    """'' while the ledger commits; otherwise what waits and why (the node takes no sessions then)."""
    if not isinstance(health, dict) or health.get("ok", True):
        return ""
    return (f" — NOT COMMITTING: {health.get('pending')} entries waiting ({health.get('last_error')}); "
            "new sessions refused until the disk has room")


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 86400}d {s % 86400 // 3600}h {s % 3600 // 60}m {s % 60}s" if s >= 86400 else \
        f"{s // 3600}h {s % 3600 // 60}m {s % 60}s"
