"""Regions, round trips between them, home uplinks, and NAT'd nodes reached through a relay.

Round trips between cities are WonderProxy's measured pings ("Miles per Millisecond: A Look at the
WonderProxy Network", P. Reinheimer, 9 Feb 2011, wonderproxy.com/blog/miles-per-milisecond; the
mean of both directions where both were measured). Within a region a round trip is LOCAL_MS, and
every home connection adds LAST_MILE_MS (an assumption in the range broadband measurements report).
A NAT'd node is reached through a relay in a random region (libp2p's circuit relay: one extra hop).
Upload rates are log-normal around a home-broadband median (an assumption); datacenter GPUs get 1 Gbit/s.
"""

from __future__ import annotations

import math
import random

REGIONS = ("new-york", "dallas", "fremont", "paris", "milan", "moscow", "sydney")
WEIGHTS = (0.2, 0.1, 0.2, 0.2, 0.1, 0.1, 0.1)  # share of volunteers and clients (an assumption)
_PINGS_MS = {
    ("new-york", "dallas"): 38.1, ("new-york", "fremont"): 78.0, ("new-york", "paris"): 77.8,
    ("new-york", "milan"): 111.9, ("new-york", "moscow"): 131.3, ("new-york", "sydney"): 319.3,
    ("dallas", "fremont"): 44.3, ("dallas", "paris"): 131.4, ("dallas", "milan"): 139.9,
    ("dallas", "moscow"): 168.5, ("dallas", "sydney"): 222.0, ("fremont", "paris"): 175.7,
    ("fremont", "milan"): 169.3, ("fremont", "moscow"): 211.8, ("fremont", "sydney"): 188.4,
    ("paris", "milan"): 21.5, ("paris", "moscow"): 56.4, ("paris", "sydney"): 348.8,
    ("milan", "moscow"): 67.1, ("milan", "sydney"): 344.7, ("moscow", "sydney"): 387.1,
}
LOCAL_MS = 5.0
LAST_MILE_MS = 10.0
HOME_UPLOAD_MBPS = 20.0  # median of the log-normal home uplink
DATACENTER_MBPS = 1000.0
CLIENT_UPLOAD = HOME_UPLOAD_MBPS * 1e6 / 8  # bytes/s


def region_rtt(a: str, b: str) -> float:
    """Round trip between two regions' backbones, in seconds."""
    if a == b:
        return LOCAL_MS / 1000
    return _PINGS_MS.get((a, b), _PINGS_MS.get((b, a), 0.0)) / 1000


def pick_region(rng: random.Random) -> str:
    return rng.choices(REGIONS, WEIGHTS)[0]


def home_upload(rng: random.Random) -> float:
    """Bytes/s of a home uplink: log-normal, median HOME_UPLOAD_MBPS, a factor e^0.8 either way at 1σ."""
    return HOME_UPLOAD_MBPS * math.exp(rng.gauss(0.0, 0.8)) * 1e6 / 8


class Endpoint:
    """Where a node or client sits: its region, and the relay's region when it is behind a NAT."""

    __slots__ = ("region", "relay")

    def __init__(self, region: str, relay: str | None = None) -> None:
        self.region, self.relay = region, relay


def rtt(a: Endpoint, b: Endpoint) -> float:
    """Seconds for a round trip between two home endpoints, through b's relay when b is NAT'd."""
    if b.relay is not None:
        return region_rtt(a.region, b.relay) + region_rtt(b.relay, b.region) + 3 * LAST_MILE_MS / 1000
    return region_rtt(a.region, b.region) + 2 * LAST_MILE_MS / 1000
