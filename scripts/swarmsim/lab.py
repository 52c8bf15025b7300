"""A swarm on one machine or in the WAN lab, as this project measures it: the same round trip and rate
on every link, every process on one host's shared cores, a fixed number of clients generating back to
back with fixed prompt and answer lengths (scripts/bench_swarm.py, bench_wan.py, bench_concurrency.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Lab:
    rtt_s: float = 0.0  # every link's round trip (netem in the WAN lab; 0 on loopback)
    mbps: float | None = None  # every link's rate; None: loopback, unlimited
    cores: float = 2.0  # shared by every node, daemon and client
    sessions: int = 1  # concurrent clients, each starting a new generation when one ends
    prompt: int = 37
    answer: int = 64

    @property
    def bytes_s(self) -> float:
        return math.inf if self.mbps is None else self.mbps * 1e6 / 8
