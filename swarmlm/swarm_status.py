"""`swarmlm swarm status`: which nodes serve which blocks of a model, and which blocks nobody serves."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Collection

from rich.console import Console
from rich.table import Table

from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.manifest import Manifest

if TYPE_CHECKING:
    from routing.records import ServerRecord


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="coverage map of a model's blocks across the swarm",
                       description="Read every node's signed DHT record for the model and show, per span, the "
                                   "nodes serving it; blocks nobody serves are flagged.")
    p.add_argument("--peers", nargs="+", required=True, metavar="MADDR", help="multiaddrs to join the swarm through")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"store folder or catalogued name (default {DEFAULT_MODEL})")
    p.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    p.add_argument("--wide", action="store_true", help="whole peer IDs beside names and the whole model root "
                                                       "(to paste into `ledger query --node/--model`)")
    p.set_defaults(func=_status)


PING_TIMEOUT = 10.0  # seconds `swarm status` gives each node to answer before its record counts as unverified


def swarm_report(records: dict[str, ServerRecord], manifest: Manifest, reached: Collection[str]) -> dict[str, Any]:
    """Coverage and capacity from the nodes the observer `reached` (answered a ping, or were measured):
    anyone can sign a record claiming any span and throughput, so the rest are listed as unverified
    and counted apart, never as capacity."""
    from node.selection import coverage
    from routing.planner import is_relayed
    from routing.reachability import relays_of

    n = manifest.num_blocks
    claimed = [r for r in records.values() if r.state == "online"]
    online = [r for r in claimed if r.peer_id in reached]
    counts = [0] * n
    for r in online:
        for b in range(r.start, min(r.end, n)):
            counts[b] += 1
    throughput = coverage(online, n)
    unserved = [b for b in range(n) if counts[b] == 0]
    nodes = [{"peer_id": r.peer_id, "name": r.name, "blocks": [r.start, r.end], "state": r.state, "dtype": r.dtype,
              "device": r.device, "scheme": r.scheme or None, "weights_root": r.weights_root or None,
              "throughput": r.throughput, "batch": {"sessions": r.batch_size, "throughput": r.batch_throughput},
              "active_sessions": r.active_sessions,
              "cache_tokens_left": r.cache_tokens_left, "version": r.version, "reached": r.peer_id in reached,
              # a node at home announces only circuit addresses: everyone reaches it through those relays
              "reach": "via relay" if is_relayed(r) else "direct", "relays": list(relays_of(r.maddrs)),
              "ring": r.ring}  # holds the head: as the first or last node of a chain it can close a ring
             for r in sorted(records.values(), key=lambda r: (r.start, r.end, r.peer_id))]
    ring = [r for r in online if r.ring]
    return {"root": manifest.root, "model": manifest.name, "num_blocks": n, "nodes": nodes, "servers_per_block": counts,
            "throughput_per_block": throughput, "unserved": unserved,
            "totals": {"nodes": len(records), "online": len(online), "unverified": len(claimed) - len(online),
                       "blocks_covered": n - len(unserved),
                       "weakest_block_throughput": min(throughput) if throughput else 0.0,
                       # ring mode needs a head-holding node at each end of the chain
                       "ring": any(r.start == 0 for r in ring) and any(r.end == n for r in ring)}}


def _status(args: argparse.Namespace) -> int:
    from routing.client import SwarmClient

    manifest = Manifest.load(resolve_model(args.model))
    client = SwarmClient(args.peers, request_timeout=30)
    try:
        records = client.run(client.records(manifest.root, manifest.num_blocks))
        reached = client.run(answering(client, records))
    finally:
        client.close()
    report = swarm_report(records, manifest, reached)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, args.wide)
    return 0 if not report["unserved"] else 1


async def answering(client: Any, records: dict[str, ServerRecord], timeout: float = PING_TIMEOUT) -> set[str]:
    """The peers among `records` that answer an info request within `timeout`, all asked at once."""
    import asyncio

    peers = [p for p, r in records.items() if r.state != "offline"]
    answers = await asyncio.gather(*(asyncio.wait_for(client.ping(p), timeout) for p in peers),
                                   return_exceptions=True)
    return {p for p, a in zip(peers, answers) if not isinstance(a, BaseException)}


def _ranges(blocks: list[int]) -> str:
    out, start = [], None
    for i, b in enumerate(blocks):
        start = b if start is None else start
        if i + 1 == len(blocks) or blocks[i + 1] != b + 1:
            out.append(f"{start}" if start == b else f"{start}-{b}")
            start = None
    return ", ".join(out)


def _reach(node: dict[str, Any], wide: bool) -> str:
    """"direct", or the relays a node at home is reached through (their IDs' tails unless `wide`)."""
    if node["reach"] != "via relay":
        return node["reach"]
    return "via relay " + ", ".join(r if wide else r[-8:] for r in node["relays"])


def _print(report: dict[str, Any], wide: bool = False) -> None:
    console = Console(width=100_000 if wide else None if Console().is_terminal else 120)
    root = report["root"] if wide else report["root"][:16] + "…"
    table = Table(title=f"{report['model'] or 'model'} {root} ({report['num_blocks']} blocks)")
    for col in ("blocks", "node", "state", "reach", "dtype", "ring", "tok/s", "sessions", "cache left", "version"):
        table.add_column(col, no_wrap=wide)
    for node in report["nodes"]:
        style = None if node["state"] == "online" and node["reached"] else "dim"
        name = f"{node['name']} {node['peer_id']}" if wide and node["name"] else node["name"] or node["peer_id"]
        table.add_row(f"{node['blocks'][0]}:{node['blocks'][1]}", name,
                      node["state"] if node["reached"] or node["state"] != "online" else "unverified", _reach(node, wide),
                      f"{node['dtype']}/{node['device']} {node['scheme'] or ''}".strip(),
                      "head" if node["ring"] else "", f"{node['throughput']:.1f}",
                      str(node["active_sessions"]), str(node["cache_tokens_left"]), str(node["version"]),
                      style=style)
    console.print(table)
    bar = "".join(str(min(c, 9)) if c else "[bold red]·[/]" for c in report["servers_per_block"])
    console.print(f"servers per block: {bar}")
    if report["unserved"]:
        console.print(f"[bold red]UNSERVED blocks: {_ranges(report['unserved'])}[/] — generation cannot complete")
    t = report["totals"]
    console.print(f"{t['online']} of {t['nodes']} nodes online, {t['blocks_covered']}/{report['num_blocks']} blocks "
                  f"covered, weakest block {t['weakest_block_throughput']:.1f} tok/s")
    if t["ring"]:
        console.print("ring mode: nodes holding the head serve the first and the last block")
    if t["unverified"]:
        console.print(f"[yellow]{t['unverified']} record(s) claim to be online but did not answer: not counted[/]")
