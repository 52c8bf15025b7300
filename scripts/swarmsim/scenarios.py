"""Named swarms: how many volunteers, of which hardware, serving which model to how many clients.

`herd` is the scale test's herding in miniature: four twins on one span, a hole beside them, nobody
leaving, the DHT's reads 5 s behind; one twin moving fills the hole, any more is herding."""

from __future__ import annotations

import math

from .engine import Config
from .hardware import LLAMA3_405B, LLAMA3_70B

HOME_MIX = {"rtx3060": 0.25, "rtx3090": 0.2, "rtx4090": 0.15, "t4": 0.1, "a100": 0.05, "m2max": 0.1, "cpu": 0.15}

SCENARIOS = {
    "hetero-200": lambda: Config(LLAMA3_70B, nodes=200, hardware_mix=HOME_MIX, client_rate=2.0),
    # demand near what the 8,192-token caches of 200 such volunteers let through (saturated, the weakest
    # window delivered ~1,800-2,200 tokens/s: README, "Policies against the bound"): the policies decide
    "busy-200": lambda: Config(LLAMA3_70B, nodes=200, hardware_mix=HOME_MIX, client_rate=4.0),
    # within what the swarm serves with either placement: through 10-13 relayed hops of home uplinks at 1-3 s
    # a token, the weakest window's swarm saturated at ~210 tokens/s (2 sessions/s offered 616; the caches
    # 83% full, the queue growing without end), random placement's thinnest blocks at ~110-130 (its cache
    # limit; at 0.3 sessions/s its hour took 4+ CPU minutes of retries)
    "hetero-1000": lambda: Config(LLAMA3_405B, nodes=1000, hardware_mix=HOME_MIX, client_rate=0.2),
    "herd": lambda: Config(LLAMA3_70B, nodes=7, hardware_mix={"rtx3090": 1.0}, client_rate=0.0,
                           mean_lifetime_s=math.inf, dht_lag_s=5.0, bound_every_s=math.inf,  # no clients: no bound
                           priced_uplinks=False,  # twins announce the same figures, whatever their uplinks
                           spans=((0, 16),) * 4 + ((16, 32), (48, 64), (64, 80))),  # 32:48 is the hole
    "small": lambda: Config(LLAMA3_70B, nodes=40, hardware_mix=HOME_MIX, client_rate=0.3, hours=0.25),
}
