"""A tighter bound on a swarm's throughput: bound.py's linear program, with each node's batching inside it.

bound.py prices a node's compute at the biggest batch it could ever run and the time its sessions hold its
cache at a one-token step, together: no node can have both. A batch of k tokens is cheap per token only
because it is big, and every token in it waits for all of it. Here each node chooses, in any mixture over
time, among modes, each a range of batch sizes (k_lo, k_hi], as the LP's variables m[i, k] (block-tokens/s
node i computes in mode k):
  - memory: each iteration streams the block's weights once and each token's KV cache (the workload's
    mean context per token made, `workload.context_per_token`), plus the launch overhead, so a block-token
    in mode k costs (weights + overhead) / k_hi + its context's read, and Σ_k read_k·m[i, k] ≤ 1;
  - arithmetic: Σ_k compute_k·m[i, k] ≤ 1 (on a GPU the two overlap, each its own constraint; on a CPU they
    add, one constraint);
  - batches: an iteration of k tokens needs k sessions held, so the time-average of the batch in progress,
    at least Σ_k k_lo·read_k·m[i, k] (and the same with compute_k), is at most the sessions the cache
    holds on average, cache / L̄;
  - cache, by Little's law over the node's whole span: a token riding j of its blocks in mode k spends at
    least the fastest chain riding j blocks of it (chains.fastest_by_ride, one-token steps) plus, on each
    of those j blocks, what an iteration of k_lo tokens takes beyond a one-token step, plus half the other
    k_lo − 1 outputs ahead of its own on the uplink; it holds L̄ cache tokens on each of the j blocks all
    that time. Per block-token that is held_k = min over j of (ride(j) + j·extra_k) + send_k (the smallest
    over how far tokens ride), and Σ_k held_k·m[i, k] ≤ span·cache / L̄.
The per-block caps of bound.py (uplink, cache at the one-token latency) stay. Costs use k_hi and waits k_lo,
so any batch in a mode is priced at its cheapest and its fastest: the modes relax, never cut, what a node
can do. Assumed as in bound.py (steady state, the simulator's cost model, lengths independent of chains,
no prefill or queueing), and that a token rides one iteration per block it passes; the wait for an
iteration already in progress is not counted (a scheduler might time arrivals to miss none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from .bound import Capacity, node_rate
from .hardware import Hardware, Model, read_time, step_time, token_flops_time

MODE_RATIO = 2 ** 0.5  # consecutive modes' batch sizes: finer is tighter and slower
ROWS = 6  # constraints per node


@dataclass(frozen=True)
class Modes:
    """A node's modes, per block-token: seconds of memory traffic, of arithmetic, and of cache holding."""

    read: np.ndarray
    compute: np.ndarray
    held: np.ndarray
    batch: np.ndarray  # k_lo: the least batch of the mode


def node_modes(hw: Hardware, model: Model, ride: np.ndarray, context: float, upload: float,
               max_batch: float) -> Modes:
    """The modes of a node on `hw`, a chain riding j of its blocks taking at least ride[j − 1] s a token
    (one-token steps), whose tokens attend `context` cached tokens on average, uploading `upload` bytes/s,
    batching at most `max_batch` tokens."""
    his = [1.0]
    while his[-1] < max_batch:
        his.append(min(his[-1] * MODE_RATIO, max_batch))
    hi, lo = np.array(his), np.array([1.0] + his[:-1])
    fixed = read_time(hw, model.block_bytes) + hw.overhead_s
    attend, think = read_time(hw, context * model.kv_bytes_per_token), token_flops_time(hw, model)
    if hw.overlap:
        read, compute = fixed / hi + attend, hw.overhead_s / hi + think
    else:
        read, compute = fixed / hi + attend + think, np.zeros_like(hi)
    one = step_time(hw, model, 1, 1)
    extra = np.maximum(0.0, np.array([step_time(hw, model, k, k) for k in lo]) - one)
    blocks = np.arange(1, len(ride) + 1)
    held = (ride[None, :] + extra[:, None] * blocks[None, :]).min(axis=1) + (lo - 1) / 2 * model.hidden_bytes / upload
    return Modes(read, compute, held, lo)


def batched_bound(nodes: Sequence[Capacity], modes: Sequence[Modes], num_blocks: int, session_tokens: float) -> float:
    """Tokens/s no routing, admission or batching exceeds over these nodes as they are placed (module
    docstring); 0 if a block is uncovered."""
    return _solve(nodes, modes, num_blocks, session_tokens)[0]


def batched_shares(nodes: Sequence[Capacity], modes: Sequence[Modes], num_blocks: int,
                   session_tokens: float) -> np.ndarray:
    """Per node, the tokens/s through it (its block-tokens/s over its span) in a solution of the bound's program:
    where the bound puts its throughput, to set beside where a simulation's goes (swarmsim.py --gap). The
    program may have several optimal solutions; this is one. Zeros if a block is uncovered."""
    return _solve(nodes, modes, num_blocks, session_tokens)[1]


def _solve(nodes: Sequence[Capacity], modes: Sequence[Modes], num_blocks: int,
           session_tokens: float) -> tuple[float, np.ndarray]:
    """The program's optimum, and per node the tokens/s through it there; (0, zeros) if a block is uncovered."""
    if not all(any(n.start <= b < n.end for n in nodes) for b in range(num_blocks)):
        return 0.0, np.zeros(len(nodes))
    # columns: T, then per node its f[i, b] (one per block of its span), then its m[i, k];
    # rows: one per block (coverage), then per node: link, memory, arithmetic, cache, batch by memory, by arithmetic
    spans = np.array([n.end - n.start for n in nodes])
    counts = np.array([len(m.read) for m in modes])
    f0 = 1 + np.concatenate([[0], np.cumsum(spans + counts)[:-1]])  # each node's first column
    r0 = num_blocks + ROWS * np.arange(len(nodes))  # each node's link row
    blocks = np.concatenate([np.arange(n.start, n.end) for n in nodes])
    f_cols = np.concatenate([f0[i] + np.arange(s) for i, s in enumerate(spans)])
    f_node = np.repeat(np.arange(len(nodes)), spans)
    m_cols = np.concatenate([f0[i] + spans[i] + np.arange(c) for i, c in enumerate(counts)])
    m_node = np.repeat(np.arange(len(nodes)), counts)
    read, compute, held, batch = (np.concatenate([getattr(m, name) for m in modes])
                                  for name in ("read", "compute", "held", "batch"))
    rows = np.concatenate([np.arange(num_blocks), blocks, r0[f_node], *(r0[m_node] + r for r in range(ROWS))])
    cols = np.concatenate([np.zeros(num_blocks, int), f_cols, f_cols, *[m_cols] * ROWS])
    vals = np.concatenate([np.ones(num_blocks), -np.ones(len(f_cols)), np.ones(len(f_cols)),
                           -np.ones(len(m_cols)), read, compute, held, batch * read, batch * compute])
    width = 1 + int((spans + counts).sum())
    upper = np.full(width, np.inf)
    upper[f_cols] = np.repeat([node_rate(n, session_tokens) for n in nodes], spans)
    sessions = np.minimum([n.cache / session_tokens if session_tokens > 0 else np.inf for n in nodes], 1e30)
    limits = np.zeros(num_blocks + ROWS * len(nodes))
    limits[r0 + 1] = limits[r0 + 2] = 1.0
    limits[r0 + 3] = np.minimum(sessions * spans, 1e30)
    limits[r0 + 4] = limits[r0 + 5] = sessions
    objective = np.zeros(width)
    objective[0] = -1.0
    a = coo_matrix((vals, (rows, cols)), shape=(len(limits), width)).tocsr()
    result = linprog(objective, A_ub=a, b_ub=limits, bounds=np.stack([np.zeros(width), upper], axis=1),
                     method="highs")
    if not result.success:
        raise RuntimeError(f"the batched bound's linear program failed: {result.message}")
    return float(-result.fun), np.array([result.x[f:f + s].sum() / s for f, s in zip(f0, spans)])
