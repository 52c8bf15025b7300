"""`swarmlm ledger audit PEER`: fetch a remote node's ledger over P2P and verify it offline."""

from __future__ import annotations

import argparse
import json

from ledger.errors import LedgerError


def register(ledger_commands: argparse._SubParsersAction) -> None:
    p = ledger_commands.add_parser(
        "audit", help="fetch a node's checkpoint and entries over P2P and verify them",
        description="Fetch PEER's latest signed checkpoint and every entry of its log, then check each "
                    "signature (from the peer ID alone), each leaf, and the Merkle tree against the checkpoint.")
    p.add_argument("peer", metavar="PEER", help="the node's peer ID (12D3KooW…)")
    p.add_argument("--peers", nargs="+", required=True, metavar="MADDR", help="multiaddrs to join the swarm through")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from routing import ledger_rpc
    from routing.client import SwarmClient

    client = SwarmClient(args.peers, request_timeout=60)
    try:
        size, note = client.run(ledger_rpc.audit(client, args.peer))
        ok, detail = True, f"{size} entries verify against its signed checkpoint"
    except LedgerError as e:
        ok, size, note, detail = False, 0, "", str(e)
    finally:
        client.close()
    if args.json:
        print(json.dumps({"peer": args.peer, "ok": ok, "size": size, "checkpoint": note, "detail": detail}))
    else:
        print(f"{'OK' if ok else 'FAILED'}: {args.peer}: {detail}")
        if note:
            print(note, end="")
    return 0 if ok else 1
