"""Upper bounds on a swarm's throughput: Helix's max-flow formulation, relaxed to a linear program.

Every generated token must pass through every block once. A node serving blocks [start, end) spends
`cost` seconds per block-token at the batch its cache holds and can send at most `upload` tokens/s onward, so
with f[i,b] the tokens/s node i computes of block b:
    maximise T  subject to  Σ_i f[i,b] ≥ T for every block b,  Σ_b cost_i·f[i,b] ≤ 1,  0 ≤ f[i,b] ≤ upload_i.
Latency, batching gaps and the choice of chains are relaxed away, so no policy on these nodes can beat
it. `best_placement_bound` also frees the placement: a node of k blocks computes at most
min(1/cost, k·upload) block-tokens/s wherever it sits.

Both price a node at the batch its cache holds as if it stepped back to back; but a session holds its
cache for as long as it decodes, a token every round trip of its chain, so the caches cap the sessions in
flight and with them the tokens/s (Little's law): `cache_limit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix


@dataclass(frozen=True)
class Capacity:
    start: int
    end: int
    cost: float  # seconds per block-token at the biggest batch its cache holds
    upload: float  # tokens/s the node can send on
    cache: float = math.inf  # tokens of KV cache it holds for sessions


def placement_bound(nodes: Sequence[Capacity], num_blocks: int) -> float:
    """Tokens/s no routing can exceed over these nodes as they are placed (0 if a block is uncovered)."""
    served = [False] * num_blocks
    for n in nodes:
        for b in range(n.start, n.end):
            served[b] = True
    if not nodes or not all(served):
        return 0.0
    rows, cols, vals, upper = [], [], [], [np.inf]
    var = 1
    for i, n in enumerate(nodes):
        for b in range(n.start, n.end):
            rows += [b, num_blocks + i]
            cols += [var, var]
            vals += [-1.0, n.cost]
            upper.append(n.upload)
            var += 1
    rows += list(range(num_blocks))
    cols += [0] * num_blocks
    vals += [1.0] * num_blocks
    a = coo_matrix((vals, (rows, cols)), shape=(num_blocks + len(nodes), var)).tocsr()
    b = np.concatenate([np.zeros(num_blocks), np.ones(len(nodes))])
    c = np.zeros(var)
    c[0] = -1.0
    result = linprog(c, A_ub=a, b_ub=b, bounds=list(zip([0.0] * var, upper)), method="highs")
    if not result.success:
        raise RuntimeError(f"the bound's linear program failed: {result.message}")
    return float(-result.fun)


def best_placement_bound(nodes: Sequence[Capacity], num_blocks: int) -> float:
    """Tokens/s with the same nodes placed as well as possible."""
    return sum(min(1 / n.cost, (n.end - n.start) * n.upload) for n in nodes) / num_blocks


def cache_limit(nodes: Sequence[Capacity], num_blocks: int, session_tokens: float,
                time_per_token: Sequence[float]) -> float:
    """Tokens/s the caches let through: a session reserves `session_tokens` on the node serving each of its
    blocks while it decodes, at best a token per `time_per_token[i]` (the fastest chain through node i
    when the nodes run the batches their caches hold), so block b passes at most Σ cache_i / session_tokens / time_per_token[i] (nodes i serving b)
    tokens/s. An estimate at the mean session length, not a proof: it is what the linear program leaves out."""
    held = [0.0] * num_blocks
    for n, t in zip(nodes, time_per_token):
        for b in range(n.start, n.end):
            held[b] += n.cache / session_tokens / t
    return min(held)
