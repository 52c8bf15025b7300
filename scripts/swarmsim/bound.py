"""Upper bounds on a swarm's throughput: Helix's max-flow formulation, relaxed to a linear program, with
the KV caches the sessions hold inside it.

Every generated token must pass through every block once. With f[i,b] the tokens/s node i computes of
block b and T the swarm's tokens/s:
    maximise T  subject to  Σ_i f[i,b] ≥ T for every block b,  Σ_b cost_i·f[i,b] ≤ 1,  0 ≤ f[i,b] ≤ rate_i.
`cost_i` is node i's seconds per block-token at the biggest batch it could ever run (its whole cache in
two-token sessions), so compute is never underestimated. `rate_i` caps the tokens/s of the sessions
passing through node i (`node_rate`), from its uplink and its cache, by Little's law:
  - its uplink sends each token's output once: at most upload_i tokens/s;
  - a session of L tokens reserves L tokens of the node's cache while it decodes, each token taking at
    least latency_i, the fastest chain through the node when every node steps one token and sends one
    token's state; so a steady state of g tokens/s through the node has g·latency_i sessions in flight,
    holding g·latency_i·L̄ ≤ cache_i cache tokens, L̄ being the cache a session holds weighted by the
    tokens it makes (`workload.cache_tokens_per_token`): g ≤ cache_i / (L̄·latency_i).
Nothing here depends on how a node batches (each token rides one step of at least one token, and its
output waits on the uplink behind no other), so the bound holds for any scheduler: the simulator's nodes
batch continuously as the daemon does (batching.py), and a token waits there for more than this.
Assumed: a steady state (time averages), the simulator's cost model (batching is otherwise free), no
prefill, replay or queueing (each only lowers throughput), and sessions' lengths drawn independently of the
chains they get. Within those, no placement of the nodes as they are, routing or admission exceeds it;
`best_placement_bound` also frees the placement.
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
    cost: float  # seconds per block-token at the biggest batch the node can run
    upload: float  # tokens/s the node can send on
    cache: float = math.inf  # tokens of KV cache it holds for sessions (on each block of its span)
    latency: float = 0.0  # seconds per token of the fastest chain through it, one token per node and step


def node_rate(node: Capacity, session_tokens: float, latency: float | None = None) -> float:
    """Tokens/s of the sessions through `node` (module docstring): its uplink's rate, and less when its
    cache cannot hold the sessions in flight at `latency` (default: the node's) per token."""
    held = session_tokens * (node.latency if latency is None else latency)
    return min(node.upload, node.cache / held) if held > 0 else node.upload


def placement_bound(nodes: Sequence[Capacity], num_blocks: int, session_tokens: float = 0.0) -> float:
    """Tokens/s no routing or admission can exceed over these nodes as they are placed (0 if a block is
    uncovered), for sessions holding `session_tokens` of cache per token made (0: caches never bind)."""
    served = [False] * num_blocks
    for n in nodes:
        for b in range(n.start, n.end):
            served[b] = True
    if not nodes or not all(served):
        return 0.0
    rows, cols, vals, upper = [], [], [], [np.inf]
    var = 1
    for i, n in enumerate(nodes):
        rate = node_rate(n, session_tokens)
        for b in range(n.start, n.end):
            rows += [b, num_blocks + i]
            cols += [var, var]
            vals += [-1.0, n.cost]
            upper.append(rate)
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


def best_placement_bound(nodes: Sequence[Capacity], num_blocks: int, session_tokens: float = 0.0,
                         latency_floor: Sequence[float] | None = None) -> float:
    """Tokens/s with the same nodes placed as well as possible: a node of k blocks computes at most
    min(1/cost, k·rate) block-tokens/s wherever it sits, its rate at `latency_floor` (per node: a time per
    token no chain through it beats, whatever the placement; default: as placed)."""
    floors = latency_floor or [n.latency for n in nodes]
    return sum(min(1 / n.cost, (n.end - n.start) * node_rate(n, session_tokens, floor))
               for n, floor in zip(nodes, floors)) / num_blocks
