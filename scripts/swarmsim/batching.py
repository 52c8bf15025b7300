"""A node's continuous batching (node/scheduler.py) as a fluid: how big its iterations are, how long they take.

The daemon never waits for a batch to fill: an idle node runs a lone step at once, and whatever arrives
while an iteration computes joins the next one. So at a steady `rate` of tokens arriving, an iteration of
S seconds gathers rate·S of them: its batch is the fixed point k = rate·S(k), at least one token and at
most the sessions the node holds (then every session rides every iteration, as a batch of all of them).
A token waits, on average, for half the iteration in progress when the node is busy, then rides its own;
its output then waits on the uplink behind the iteration's others (all of them counted, the pessimistic
side). A fast node with a full cache thus runs iterations of the sessions that are present, not of every
session it holds, which is what makes its throughput more than its cache over one big batch's time.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hardware import Hardware, Model, step_time

FIXED_POINT_STEPS = 8  # k = rate·S(k) converges in a few steps: S grows slower than k until compute binds


@dataclass(frozen=True)
class Iteration:
    batch: float  # tokens per iteration
    step: float  # seconds an iteration takes through the node's whole span
    send: float  # seconds its outputs take on the node's uplink
    wait: float  # mean seconds a token waits for the iteration in progress


def iteration(hw: Hardware, model: Model, blocks: int, sessions: int, mean_context: float, rate: float,
              upload: float, batch: float = 1.0) -> Iteration:
    """The iteration of a node holding `sessions` sessions (of `mean_context` tokens cached on average) that
    `rate` tokens/s reach, uploading at `upload` bytes/s; `batch`: where to start the fixed point (the last
    tick's, so a steady node converges at once)."""
    def step(k: float) -> float:
        return blocks * step_time(hw, model, k, int(mean_context * k))

    k = min(max(batch, 1.0), sessions)
    for _ in range(FIXED_POINT_STEPS):
        k = min(max(rate * step(k), 1.0), sessions)
    took = step(k)
    busy = min(1.0, rate * took / k)
    return Iteration(k, took, k * model.hidden_bytes / upload, busy * took / 2 if k < sessions else 0.0)
