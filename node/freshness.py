"""When a node announces before its period is up: its load moved far from what its record shows.

Clients price a node by the sessions its record shows (routing/planner.py `compute_costs`). Between
periodic announcements (30 s) every client that reads the record sees the same load and the cheapest
node looks cheapest to all of them: they herd onto it until it refuses, and one slow node can hold far
more sessions than it showed (in the simulator's saturated hetero-200, M2 Max volunteers priced at a
light load gathered ~60 sessions each at 1.4-1.7 s a token, half the closed-loop clients). So a node
looks every LOAD_CHECK_PERIOD at its sessions and announces at once when they moved by a quarter of
what its record shows, and by at least two: an announcement per check at most, only while its load
moves that fast, none for the jitter of a session or two. Measured in the simulator (README,
"Nodes announce when their load moves").
"""

from __future__ import annotations

LOAD_CHECK_PERIOD = 2.0  # seconds between looks at the load
LOAD_MARGIN = 0.25  # of the sessions the record shows
LOAD_MIN_CHANGE = 2  # sessions


def load_moved(shown: int, now: int) -> bool:
    """Whether `now` sessions differ from the `shown` ones enough to announce again before the period."""
    return abs(now - shown) >= max(LOAD_MIN_CHANGE, LOAD_MARGIN * shown)
