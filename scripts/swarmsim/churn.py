"""How long volunteers stay: heavy-tailed lifetimes, and how they leave.

Javadi, Kondo, Vincent and Anderson ("Mining for statistical models of availability in large-scale
distributed systems: an empirical study of SETI@home", MASCOTS 2009; extended in IEEE TPDS 22(11),
2011) fit the availability intervals of ~230,000 SETI@home hosts: the hosts whose availability is a
truly random process fall into a few groups fitted best by Weibull, log-normal or gamma laws with
shape below 1, i.e. a decreasing hazard: most sessions are short, a few last days. We draw lifetimes
from a Weibull law with shape SHAPE < 1 and a scale that sets the mean; the exact per-group
parameters of the paper are not transcribed here (the scenario states the mean it assumes).
The swarm starts in its steady state: a volunteer present at a random moment is a length-biased draw
(long stays are more often caught), and what it has left of its stay is a uniform share of that
(`residual_lifetime`). Drawing fresh lifetimes for the volunteers present at the start instead would
make a sixth of a thousand leave in the first three minutes (shape 0.5: the hazard is highest early).
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


def residual_lifetime(rng: random.Random, mean_s: float, shape: float = SHAPE) -> float:
    """Seconds a volunteer found online at a random moment stays on: a length-biased Weibull stay
    ((L/scale)^shape is Gamma(1 + 1/shape)-distributed), of which a uniform share is left."""
    stay = weibull_scale(mean_s, shape) * rng.gammavariate(1 + 1 / shape, 1.0) ** (1 / shape)
    return rng.random() * stay
