"""The bound with batching inside (scripts/swarmsim/batch_bound.py) on one node whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scripts.swarmsim.batch_bound import MODE_RATIO, batched_bound, batched_shares, node_modes
from scripts.swarmsim.bound import Capacity, placement_bound
from scripts.swarmsim.hardware import Hardware, Model

# One block of 1e9 one-byte weights on a CPU-like device whose reads and arithmetic add: a step of k tokens
# takes 0.01 + 0.001·k s (the weights' read, then 1 ms of arithmetic a token); no KV cache to read.
HW = Hardware("toy", 1, bandwidth_gbs=100, tflops=2, power_w=1, overhead_s=0.0, overlap=False, bw_eff=1, flop_eff=1)
MODEL = Model("toy", 1, params_per_block=1e9, hidden_size=1, kv_heads=0, bytes_per_param=1)
LATENCY, SESSIONS, LENGTH = 0.01, 10, 100  # the fastest chain's one-token time; sessions its cache holds


def _node() -> Capacity:
    return Capacity(0, 1, cost=0.001, upload=1e12, cache=SESSIONS * LENGTH, latency=LATENCY)


def _modes(max_batch: float = 1000):
    return node_modes(HW, MODEL, np.array([LATENCY]), context=0.0, upload=1e12, max_batch=max_batch)


def _best_by_hand() -> float:
    """max over k of min(k / (0.01 + 0.001k), 10 / (0.01 + 0.001(k − 1))): compute against the sessions its
    cache holds over their time per token, each token waiting for its batch (equal at k ≈ 10.5), with no
    batch bigger than the 10 sessions held: k = 10, 500 tokens/s."""
    k = min((0.001 + math.sqrt(0.001 ** 2 + 4 * 0.001 * 0.1)) / 0.002, SESSIONS)
    return min(k / (0.01 + 0.001 * k), SESSIONS / (LATENCY + 0.001 * (k - 1)))


def test_a_batch_is_cheap_per_token_only_by_making_every_token_in_it_wait() -> None:
    """bound.py grants the cache's 10 sessions at the one-token 10 ms (1,000 tokens/s) and compute at the
    biggest batch (1,000 tokens/s too); no batch size gives both: 500. The modes price each range of
    batches at its cheapest and fastest, so the bound sits at most one mode's step above the exact answer."""
    node, exact = _node(), _best_by_hand()
    assert placement_bound([node], 1, LENGTH) == pytest.approx(1000.0)
    assert exact == pytest.approx(500.0)
    got = batched_bound([node], [_modes()], 1, LENGTH)
    assert exact - 1e-6 <= got <= exact * MODE_RATIO


def test_a_cache_that_never_binds_leaves_compute_at_the_biggest_batch() -> None:
    """Caches ignored (no session length): the biggest batch's 1/(0.01/1000 + 0.001) tokens/s."""
    assert batched_bound([_node()], [_modes()], 1, 0.0) == pytest.approx(1 / (0.01 / 1000 + 0.001))


def test_one_token_at_a_time_when_batches_cannot_grow() -> None:
    """A node that never batches (at most one token) runs 1/0.011 tokens/s; its cache cannot help."""
    assert batched_bound([_node()], [_modes(max_batch=1)], 1, LENGTH) == pytest.approx(1 / 0.011)


def test_an_uncovered_block_stops_it_and_nodes_side_by_side_add_up() -> None:
    node = _node()
    alone = batched_bound([node], [_modes()], 1, LENGTH)
    assert batched_bound([Capacity(0, 1, 0.001, 1e12)], [_modes()], 2, LENGTH) == 0.0
    assert batched_bound([node, node], [_modes(), _modes()], 1, LENGTH) == pytest.approx(2 * alone)


def test_the_shares_say_which_node_carries_the_bounds_tokens() -> None:
    """Two blocks: one node serves both, two serve one each; every token passes each block, so the tokens
    through the nodes of each block add up to the bound, and a node alone carries all of it."""
    node, whole = _node(), Capacity(0, 2, cost=0.001, upload=1e12, cache=SESSIONS * LENGTH, latency=LATENCY)
    modes = [_modes(), _modes(), node_modes(HW, MODEL, np.array([LATENCY, 2 * LATENCY]), 0.0, 1e12, 1000)]
    nodes = [node, Capacity(1, 2, cost=0.001, upload=1e12, cache=SESSIONS * LENGTH, latency=LATENCY), whole]
    bound = batched_bound(nodes, modes, 2, LENGTH)
    shares = batched_shares(nodes, modes, 2, LENGTH)
    assert (shares >= 0).all() and shares[0] + shares[2] >= bound * (1 - 1e-9) and shares[1] + shares[2] >= bound * (1 - 1e-9)
    assert batched_shares([node], [_modes()], 1, LENGTH)[0] == pytest.approx(batched_bound([node], [_modes()], 1, LENGTH))
    assert list(batched_shares([node], [_modes()], 2, LENGTH)) == [0.0]  # block 1 uncovered
