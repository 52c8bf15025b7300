"""What verification costs: tokens/s with attestations and spot checks (default rate) vs without.

Six nodes (each span of a 3-way split served twice, so spot checks have a second node to ask);
two clients on the same swarm, one verifying and one not, alternate generations of the same
greedy answer. Also times one attestation: the node's signature and the client's check.

    python scripts/bench_verify.py [--tokens 64] [--repeats 5] [--rate 0.02]
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from benchlib import PROMPT, alternate, bench_parser, median_tps
from ledger.keys import Identity
from node.local_swarm import LocalSwarm, even_spans
from routing import wire
from routing.attestation import attest, check_step_attestation
from shards.catalog import resolve_model
from shards.manifest import Manifest
from swarmlm.sdk import DEFAULT_SPOT_CHECK_RATE, RemoteModel

def attestation_cost(rounds: int = 2000) -> tuple[float, float]:
    """Microseconds to sign one step attestation (node) and to check it (client)."""
    identity, root = Identity.generate(), "ab" * 32
    sent, received = torch.randn(1, 1, 576), torch.randn(1, 1, 576)
    fields = dict(session="s", step=0, start=7, manifest_root=bytes.fromhex(root), blocks=(0, 10), dtype="float32",
                  input_digest=wire.tensor_digest(sent), output_digest=wire.tensor_digest(received),
                  travel_dtype="float32")
    started = time.perf_counter()
    for _ in range(rounds):
        att = attest(identity, **fields)
    signed = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(rounds):
        check_step_attestation(att, peer=identity.peer_id, session="s", step=0, start=7, root=root, blocks=(0, 10),
                               dtype="float32", sent=sent, received=received)
    checked = time.perf_counter() - started
    return signed / rounds * 1e6, checked / rounds * 1e6


def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--rate", type=float, default=DEFAULT_SPOT_CHECK_RATE)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = resolve_model(args.model)
    spans = even_spans(Manifest.load(store).num_blocks, 3)
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp, LocalSwarm(str(store), Path(tmp)) as swarm:
        swarm.start(3, Manifest.load(store).num_blocks)
        for span in spans:
            swarm.spawn_node(span)
        with RemoteModel.connect(swarm.initial_peers, store, spot_check_rate=args.rate,
                                 evidence_dir=Path(tmp) / "evidence") as checked, \
                RemoteModel.connect(swarm.initial_peers, store, verify=False) as trusting:
            runs = alternate({"verified": lambda: checked.generate(PROMPT, args.tokens, ignore_eos=True),
                              "unverified": lambda: trusting.generate(PROMPT, args.tokens, ignore_eos=True)},
                             args.repeats)
            stats = checked.verifier.stats
    sign_us, check_us = attestation_cost()
    on, off = median_tps(runs["verified"]), median_tps(runs["unverified"])
    print(f"{args.tokens} tokens, greedy, 3 spans x 2 nodes, spot-check rate {args.rate} (medians of {args.repeats})")
    print(f"with attestations + spot checks   {on:6.1f} tok/s   ({stats.checks} checks, {stats.mismatches} mismatches)")
    print(f"without                           {off:6.1f} tok/s")
    print(f"ratio                             {on / off:6.2f}x")
    print(f"one attestation: sign {sign_us:.0f} us (node), check {check_us:.0f} us (client) per span step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
