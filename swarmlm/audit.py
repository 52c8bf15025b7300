"""`swarmlm audit`: probe every node with ordinary forward requests and check its answers from the shards.

Each probe is a random token sequence embedded and run through the blocks before the node's span
by the auditor itself, so the node sees realistic hidden states, indistinguishable from a client's
spot check. The node's signed output is compared with the auditor's own float32 computation.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from routing.client import SwarmClient
from routing.errors import RoutingError
from routing.evidence import relative_error, tolerance
from routing.records import ServerRecord
from routing.verification import attested_forward
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.local import LocalModel


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


def audit_node(client: SwarmClient, model: LocalModel, record: ServerRecord, root: str, probes: list[torch.Tensor]
               ) -> dict[str, Any]:
    errors: list[float] = []
    problem = None
    for ids in probes:
        with torch.inference_mode():
            hidden = model.stack.narrow(0, record.start)(model.head.embed(ids)) if record.start else \
                model.head.embed(ids)
            reference = model.stack.narrow(record.start, record.end)(hidden)
        try:
            claim = client.run(attested_forward(client, record, root, (record.start, record.end), hidden,
                                                hidden.shape[1]))
        except RoutingError as e:
            problem = str(e)
            break
        errors.append(relative_error(claim.output, reference))
    limit = tolerance(record.dtype, "float32")
    worst = max(errors) if errors else None
    verdict = "FAIL" if problem or worst is None or worst > limit else "PASS"
    return {"peer_id": record.peer_id, "blocks": [record.start, record.end], "dtype": record.dtype,
            "max_relative_error": worst, "tolerance": limit, "verdict": verdict, "problem": problem}


def _audit(args: argparse.Namespace) -> int:
    model = LocalModel.load(resolve_model(args.model))
    root, n = model.store.root, model.store.manifest.num_blocks
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    client = SwarmClient(args.peers, request_timeout=60)
    try:
        records = [r for r in client.run(client.records(root, n)).values() if r.is_serving]
        client.learn(records)
        results = []
        for record in sorted(records, key=lambda r: (r.start, r.peer_id)):
            probes = [torch.randint(0, model.config.vocab_size, (1, args.tokens), generator=generator)
                      for _ in range(args.probes)]
            results.append(audit_node(client, model, record, root, probes))
    finally:
        client.close()
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
