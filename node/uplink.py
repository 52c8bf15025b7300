"""A node's uplink in the speed it announces: its outputs leave on it, so a fast GPU is no faster than they go.

Each token a node computes leaves once, as one hidden state, on the node's upload link: to the client, or
pushed to the next node. A home uplink of 10-20 Mbit/s sends only ~100-150 of a 70B model's 16 KiB states a
second, fewer than an RTX 3090 computes, and a planner pricing compute alone sends sessions into a queue on
it. So a node that knows its upload speed (`--upload-mbps`, a speed test's figure) folds the time its
outputs take into each tokens/s figure it announces: 1 / (1 / compute + bytes / upload), for one session
alone and for a batch (whose iteration sends each of its tokens' states); the planner then prices a loaded
node's uplink as it prices its compute (routing/planner.py `batch_step`). Petals folds its measured network
throughput into its announced rps the same way. In the simulator (scripts/swarmsim.py), whose uplinks queue
when they cannot keep up, this lifted a saturated 200-node swarm 2.4-5.0% at a lower p95, and cut the
1,000-node swarm's p95 time per token by 17% (README, "Uplinks that queue, and uplinks in the price").
"""

from __future__ import annotations

MBIT = 1e6 / 8  # bytes/s in one Mbit/s


def output_bytes(hidden_size: int, bytes_per_value: int) -> int:
    """Bytes one token's output takes on the wire: its hidden state."""
    return hidden_size * bytes_per_value


def through_uplink(tokens_s: float, token_bytes: int, upload_mbps: float) -> float:
    """`tokens_s` of compute, with each token's `token_bytes` also sent on an uplink of `upload_mbps`
    (0: not known, the figure as it is)."""
    if upload_mbps <= 0 or tokens_s <= 0:
        return tokens_s
    return 1.0 / (1.0 / tokens_s + token_bytes / (upload_mbps * MBIT))
