"""Where a simulation's throughput falls short of the batched bound, at the moment it ends
(`swarmsim.py --gap`): per kind of hardware, what its nodes carry beside what the bound's program gives
them (batch_bound.py `batched_shares`), and what binds them: cache, uplink, and the share of its sessions
riding each of its iterations (a loaded node steps continuously, so its batch, not its busy time, says how
much of its compute its sessions use); then where a decoded token's time goes. Run it saturated
(`--rate 0 --clients N`), so the swarm is at its capacity."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Simulation

HEADER = ("hardware", "nodes", "blocks", "sessions", "cache full", "uplink busy", "batch", "of sessions",
          "tok/s through", "bound's", "chain floor s")


def table(sim: Simulation) -> list[str]:
    """Lines to print: one per kind of hardware online, then the time per token's parts."""
    online = [x for x in sim.nodes.values() if x.state in ("online", "draining")]
    shares, rides = sim.yardstick.shares(online)
    hidden = sim.model.hidden_bytes
    kinds: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for x, share, ride in zip(online, shares, rides):
        it = x.iteration
        kinds[x.hw.name].append((x.end - x.start, len(x.sessions), x.cache_used / max(x.cache_limit, 1),
                                 x.rate * hidden / x.upload, it.batch, it.batch / max(len(x.sessions), 1),
                                 x.rate, share, float(ride.min())))
    rows = [HEADER]
    for name, nodes in sorted(kinds.items()):
        def mean(i: int) -> float:
            return statistics.fmean(n[i] for n in nodes)
        rows.append((name, str(len(nodes)), f"{mean(0):.0f}", f"{mean(1):.1f}", f"{mean(2):.2f}", f"{mean(3):.2f}",
                     f"{mean(4):.1f}", f"{mean(5):.2f}", f"{sum(n[6] for n in nodes):.0f}",
                     f"{sum(n[7] for n in nodes):.0f}", f"{mean(8):.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return lines + [_parts(sim)]


def _parts(sim: Simulation) -> str:
    """The mean over decoding sessions of their time per token, split as `Simulation.time_per_token` adds it."""
    parts = {"wait": 0.0, "steps": 0.0, "uplinks": 0.0, "queues": 0.0, "total": 0.0}
    decoding = [s for s in sim.sessions if s.hops and not s.waiting]
    for s in decoding:
        for n, a, b, _ in s.hops:
            parts["wait"] += n.iteration.wait
            parts["steps"] += (b - a) / (n.end - n.start) * n.iteration.step
            parts["uplinks"] += n.iteration.send
        total = sim.time_per_token(s)
        parts["total"] += total
        parts["queues"] += total * (1 - 1 / max(n.queued for n, *_ in s.hops))
    if not decoding:
        return "no session decoding"
    k = len(decoding)
    rest = (parts["total"] - parts["wait"] - parts["steps"] - parts["uplinks"] - parts["queues"]) / k
    hops = statistics.fmean(len(s.hops) for s in decoding)
    return (f"{k} sessions decoding over {hops:.2f} hops on average, {parts['total'] / k:.3f} s a token: waiting for "
            f"iterations in progress {parts['wait'] / k:.3f}, their steps {parts['steps'] / k:.3f}, uplinks "
            f"{parts['uplinks'] / k:.3f}, queues on full uplinks {parts['queues'] / k:.3f}, trips and the client "
            f"{rest:.3f}")
