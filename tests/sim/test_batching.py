"""A node's continuous batching as the simulator models it (scripts/swarmsim/batching.py)."""

from __future__ import annotations

import pytest

from scripts.swarmsim.batching import iteration
from scripts.swarmsim.hardware import LLAMA3_70B, PROFILES, step_time

A100, BLOCKS, CONTEXT, UPLOAD = PROFILES["a100"], 80, 700.0, 125e6


def _step(batch: float) -> float:
    return BLOCKS * step_time(A100, LLAMA3_70B, batch, int(CONTEXT * batch))


def test_an_idle_node_runs_a_lone_step_and_a_token_seldom_waits() -> None:
    it = iteration(A100, LLAMA3_70B, BLOCKS, sessions=50, mean_context=CONTEXT, rate=0.5, upload=UPLOAD)
    assert it.batch == 1.0 and it.step == pytest.approx(_step(1))
    assert it.wait == pytest.approx(0.5 * it.step * it.step / 2)  # busy 0.5·step of the time, half a step then


def test_a_busy_node_batches_what_arrives_during_one_iteration() -> None:
    rate = 500.0
    it = iteration(A100, LLAMA3_70B, BLOCKS, sessions=200, mean_context=CONTEXT, rate=rate, upload=UPLOAD)
    assert 1 < it.batch < 200
    assert it.batch == pytest.approx(rate * it.step, rel=1e-3)  # the fixed point
    assert it.step == pytest.approx(_step(it.batch))
    assert it.wait == pytest.approx(it.step / 2, rel=1e-3)
    assert it.send == pytest.approx(it.batch * LLAMA3_70B.hidden_bytes / UPLOAD)


def test_a_node_whose_sessions_all_ride_every_iteration_batches_them_all_and_no_token_waits() -> None:
    it = iteration(A100, LLAMA3_70B, BLOCKS, sessions=20, mean_context=CONTEXT, rate=5000.0, upload=UPLOAD)
    assert it.batch == 20 and it.wait == 0.0 and it.step == pytest.approx(_step(20))


def test_continuous_batching_lets_a_full_cache_through_faster_than_one_batch_of_all_its_sessions() -> None:
    """120 sessions, each 0.13 s a token elsewhere in its chain: riding one batch of all 120, they make
    120 / (0.13 + step(120)) tokens/s; batched as they arrive, the node makes more of the same cache."""
    sessions, away = 120, 0.13
    all_at_once = sessions / (away + _step(sessions))
    rate = all_at_once
    for _ in range(50):  # the tick loop's fixed point: the rate the iteration's times allow
        it = iteration(A100, LLAMA3_70B, BLOCKS, sessions, CONTEXT, rate, UPLOAD)
        rate = sessions / (away + it.wait + it.step + it.send)
    assert rate > 1.2 * all_at_once
    assert rate * it.step / it.batch <= 1 + 1e-6  # never busier than all the time
