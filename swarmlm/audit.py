"""`swarmlm audit`: probe every node with ordinary forward requests and check its answers from the shards.

Each probe is a random token sequence embedded and run through the blocks before the node's span
by the auditor itself, so the node sees realistic hidden states, indistinguishable from a client's
spot check. The node's signed output is compared with the auditor's own float32 computation.
"""

from __future__ import annotations

import argparse
import json

from shards.catalog import DEFAULT_MODEL, resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="probe every node's span and check its outputs against the shards",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"store folder or catalogued name (default {DEFAULT_MODEL})")
    p.add_argument("--peers", nargs="+", required=True, metavar="MADDR", help="multiaddrs to join the swarm through")
    p.add_argument("--probes", type=int, default=2, help="probe sequences per node (default 2)")
    p.add_argument("--tokens", type=int, default=16, help="tokens per probe (default 16)")
    p.add_argument("--seed", type=int, default=None, help="seed for the probe tokens")
    p.add_argument("--json", action="store_true", help="one JSON object per node, one per line")
    p.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from shards.local import LocalModel

    from .auditor import audit_swarm

    model = LocalModel.load(resolve_model(args.model))
    results = audit_swarm(model, args.peers, args.probes, args.tokens, args.seed)
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            err = "-" if r["max_relative_error"] is None else f"{r['max_relative_error']:.2e}"
            print(f"{r['verdict']}  {r['peer_id']}  blocks {r['blocks'][0]:>2}:{r['blocks'][1]:<2}  {r['dtype']:<8}  "
                  f"max rel error {err} (tolerance {r['tolerance']:.0e})" + (f"  {r['problem']}" if r['problem'] else ""))
    if not args.json:
        print(f"{sum(r['verdict'] == 'PASS' for r in results)} of {len(results)} nodes pass")
    return 0 if all(r["verdict"] == "PASS" for r in results) else 1
