"""How long volunteers stay: heavy-tailed lifetimes, and how they leave.

Javadi, Kondo, Vincent and Anderson ("Mining for statistical models of availability in large-scale
distributed systems: an empirical study of SETI@home", MASCOTS 2009; extended in IEEE TPDS 22(11),
2011) fit the availability intervals of ~230,000 SETI@home hosts: the hosts whose availability is a
truly random process fall into a few groups fitted best by Weibull, log-normal or gamma laws with
shape below 1, i.e. a decreasing hazard: most sessions are short, a few last days. We draw lifetimes
from a Weibull law with shape SHAPE < 1 and a scale that sets the mean; the exact per-group
parameters of the paper are not transcribed here (the scenario states the mean it assumes).
Volunteers that leave either shut down politely (drain: sessions are refused with DRAINING) or crash.
"""

from __future__ import annotations

import math
import random

SHAPE = 0.5


def weibull_scale(mean_s: float, shape: float = SHAPE) -> float:
    return mean_s / math.gamma(1 + 1 / shape)


def lifetime(rng: random.Random, mean_s: float, shape: float = SHAPE) -> float:
    """Seconds a volunteer stays online."""
    return rng.weibullvariate(weibull_scale(mean_s, shape), shape)
