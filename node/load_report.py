"""When a serving node tells the DHT about its load before its next periodic announcement.

Clients plan only through nodes whose announced free cache can hold their session
(`routing.planner.has_room`), but a record is up to an announce period old: in a busy swarm the
nodes every client finds best fill up in that time, refuse the opens, get banned and make each
client plan again (on the simulated 1,000-node swarm, most plans), and a node that emptied looks full
to everyone until its next period. So a node announces again as soon as its free cache is off by
more than a factor of two from what it last announced (and by at least MIN_CHANGE tokens): at most a
few extra DHT stores a period, each halving what a stale record can misstate.
"""

from __future__ import annotations

MIN_CHANGE = 256  # tokens: a full node announces once this much is free again (a short session's worth)


def load_is_stale(announced_left: int, left_now: int) -> bool:
    """Whether free cache moved far enough from the record's `announced_left` to announce anew."""
    return 2 * left_now < announced_left or left_now >= 2 * announced_left + MIN_CHANGE
