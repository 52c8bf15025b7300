"""The simulator's pictures: three PNGs from a short run of each placement."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scripts.swarmsim.engine import PLACEMENTS, Config, Simulation
from scripts.swarmsim.hardware import LLAMA3_70B
from scripts.swarmsim.plots import write_pngs
from scripts.swarmsim.scenarios import HOME_MIX

TINY = Config(LLAMA3_70B, nodes=12, hardware_mix=HOME_MIX, client_rate=0.5, hours=0.02, bound_every_s=10.0)


def test_a_run_draws_throughput_coverage_and_latency(tmp_path: Path) -> None:
    runs = {}
    for placement in PLACEMENTS:
        sim = Simulation(dataclasses.replace(TINY, placement=placement))
        sim.run()
        runs[placement] = sim.metrics
        assert len(sim.metrics.servers) == len(sim.metrics.series) > 1
        assert all(len(row) == LLAMA3_70B.num_blocks for row in sim.metrics.servers)
    paths = write_pngs(runs, tmp_path / "pngs", "tiny")
    assert [p.name for p in paths] == ["throughput.png", "coverage.png", "latency_cdf.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
