"""Named swarms: how many volunteers, of which hardware, serving which model to how many clients."""

from __future__ import annotations

from .engine import Config
from .hardware import LLAMA3_405B, LLAMA3_70B

HOME_MIX = {"rtx3060": 0.25, "rtx3090": 0.2, "rtx4090": 0.15, "t4": 0.1, "a100": 0.05, "m2max": 0.1, "cpu": 0.15}

SCENARIOS = {
    "hetero-200": lambda: Config(LLAMA3_70B, nodes=200, hardware_mix=HOME_MIX, client_rate=2.0),
    "hetero-1000": lambda: Config(LLAMA3_405B, nodes=1000, hardware_mix=HOME_MIX, client_rate=4.0),
    "small": lambda: Config(LLAMA3_70B, nodes=40, hardware_mix=HOME_MIX, client_rate=0.3, hours=0.25),
}
