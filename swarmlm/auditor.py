"""The audit behind `swarmlm audit`: probe each serving node's span and compare with our own computation."""

from __future__ import annotations

from typing import Any

import torch

from routing.client import SwarmClient
from routing.errors import RoutingError
from routing.evidence import relative_error, tolerance
from routing.records import ServerRecord
from routing.verification import attested_forward
from shards.local import LocalModel


def audit_swarm(model: LocalModel, peers: list[str], probes: int, tokens: int, seed: int | None
                ) -> list[dict[str, Any]]:
    """One verdict per serving node, in block order."""
    root, n = model.store.root, model.store.manifest.num_blocks
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    client = SwarmClient(peers, request_timeout=60)
    try:
        records = [r for r in client.run(client.records(root, n)).values() if r.is_serving]
        client.learn(records)
        results = []
        for record in sorted(records, key=lambda r: (r.start, r.peer_id)):
            inputs = [torch.randint(0, model.config.vocab_size, (1, tokens), generator=generator)
                      for _ in range(probes)]
            results.append(audit_node(client, model, record, root, inputs))
        return results
    finally:
        client.close()


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
    limit = tolerance(record.dtype, "float32", record.scheme or None)  # a quantized node vs the base: gross faults only
    worst = max(errors) if errors else None
    verdict = "FAIL" if problem or worst is None or worst > limit else "PASS"
    return {"peer_id": record.peer_id, "blocks": [record.start, record.end], "dtype": record.dtype,
            "max_relative_error": worst, "tolerance": limit, "verdict": verdict, "problem": problem}
