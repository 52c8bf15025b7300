"""`swarmlm ledger check-evidence FILE --model M`: confirm or reject evidence offline, from the shards alone."""

from __future__ import annotations

import argparse
import json

from shards.catalog import DEFAULT_MODEL, resolve_model


def register(ledger_commands: argparse._SubParsersAction) -> None:
    p = ledger_commands.add_parser(
        "check-evidence", help="re-run a disputed step from the shards and confirm or reject the verdict",
        description="Verify an evidence file completely offline: the publisher's and both nodes' signatures, "
                    "every digest, then recompute the disputed step in float32 from the model's verified shards. "
                    "Exit 0 when the verdict holds, 1 when it does not.")
    p.add_argument("file", metavar="FILE", help="an .evidence file (written by the client that caught the node)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"store folder or catalogued name (default {DEFAULT_MODEL})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from routing.evidence import Evidence, check_evidence
    from shards.store import ShardStore

    evidence = Evidence.load(args.file)
    judgement = check_evidence(evidence, ShardStore(resolve_model(args.model)))
    result = {"confirmed": judgement.valid, "dishonest": judgement.dishonest, "claimed": evidence.dishonest,
              "reason": judgement.reason, "blocks": list(evidence.blocks), "position": evidence.start,
              "publisher": evidence.publisher, "relative_errors": judgement.errors,
              "tolerances": {c.attestation.node: c.bound() for c in (evidence.step, evidence.forward)},
              "precisions": {c.attestation.node: c.precision for c in (evidence.step, evidence.forward)}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'CONFIRMED' if judgement.valid else 'REJECTED'}: {judgement.reason}")
        print(f"  claim: {evidence.dishonest} computed blocks {evidence.blocks[0]}:{evidence.blocks[1]} wrong at "
              f"position {evidence.start} (published by {evidence.publisher})")
        for node, err in judgement.errors.items():
            print(f"  {node}: relative error {err:.2e} (tolerance {result['tolerances'][node]:.0e} for "
                  f"{result['precisions'][node]})")
    return 0 if judgement.valid else 1
