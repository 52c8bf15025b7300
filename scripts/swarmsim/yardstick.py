"""The yardsticks the simulation samples each `bound_every_s`: the throughput bounds over the nodes online
(bound.py, batch_bound.py), and what they need from where the nodes sit: per node, by how many of its
blocks a chain rides, a lower bound on any chain's seconds per token through it (chains.py), relayed or
pushed, and the placement-free floors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import chains, network, workload
from .batch_bound import Modes, batched_bound, batched_shares, node_modes
from .bound import Capacity, best_placement_bound, placement_bound
from .hardware import Model

if TYPE_CHECKING:
    from .engine import Config, SimNode


@dataclass
class Yardstick:
    cfg: Config
    link_rtt: Callable[[network.Endpoint, network.Endpoint], float]  # the simulation's round trips
    client_upload: float  # bytes/s

    @property
    def model(self) -> Model:
        return self.cfg.model

    def bounds(self, online: list[SimNode]) -> tuple[float, float, float]:
        """Tokens/s over the nodes `online`: the bound for them as placed, the bound for the same nodes placed
        anywhere (their caches and the fastest chains through them inside, bound.py), and the first with each
        node's batching inside (batch_bound.py)."""
        n, held = self.model.num_blocks, workload.cache_tokens_per_token()
        floors = self.latency_floors(online)
        rides = self.rides(online, floors)
        caps, modes = self._program(online, rides)
        return (placement_bound(caps, n, held), best_placement_bound(caps, n, held, floors),
                batched_bound(caps, modes, n, held))

    def shares(self, online: list[SimNode]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Per node, the tokens/s through it in a solution of the batched bound's program, and the rides it
        was given (`rides`): where the bound puts its throughput and how fast it takes each node's chains."""
        rides = self.rides(online, self.latency_floors(online))
        caps, modes = self._program(online, rides)
        return batched_shares(caps, modes, self.model.num_blocks, workload.cache_tokens_per_token()), rides

    def _program(self, online: list[SimNode], rides: list[np.ndarray]) -> tuple[list[Capacity], list[Modes]]:
        """Each node's capacities (bound.py) and batching modes (batch_bound.py), its chains taking `rides`."""
        m, context = self.model, workload.context_per_token()
        caps = [Capacity(x.start, x.end, x.cost, x.upload / m.hidden_bytes, x.cache_room, float(ride.min()))
                for x, ride in zip(online, rides)]
        modes = [node_modes(x.hw, m, ride, context, x.upload, max(1, x.cache_room // 2)) for x, ride in zip(online, rides)]
        return caps, modes

    def _hop_fixed(self, client: network.Endpoint, x: SimNode) -> float:
        """A hop's seconds besides its blocks' steps: the round trip, its two messages, one token's state
        up from the client and on from the node."""
        return (self.link_rtt(client, x.endpoint) + 2 * self.cfg.message_s + self.model.hidden_bytes / x.upload
                + self.model.hidden_bytes / self.client_upload)

    def latency_floors(self, nodes: list[SimNode]) -> list[float]:
        """Per node, seconds per token no chain through it beats wherever the nodes sit, relayed or
        pushed: the client's round trip to its nearest node, two messages, a token's state up and on from
        this node, and every block at the fastest one-token step of any node present."""
        m = self.model
        steps = m.num_blocks * min((x.step_one for x in nodes), default=0.0)
        if self.cfg.push and any(x.ring for x in nodes):  # a ring leaves the client out (`Simulation._ring_trip`)
            return [self.cfg.message_s + m.hidden_bytes / x.upload + steps for x in nodes]
        near = min((self.link_rtt(network.Endpoint(r), x.endpoint) for r in network.REGIONS for x in nodes),
                   default=0.0)
        return [self.cfg.client_s + near + 2 * self.cfg.message_s + m.hidden_bytes / x.upload
                + m.hidden_bytes / self.client_upload + steps for x in nodes]

    def free_rides(self, nodes: list[SimNode], floors: list[float]) -> list[np.ndarray]:
        """Per node, by how many of its blocks j a chain rides, seconds per token no chain beats wherever the
        nodes sit: the floor (`latency_floors`) with j of its blocks at its own one-token step."""
        fastest = min((x.step_one for x in nodes), default=0.0)
        return [floor + np.arange(1, x.end - x.start + 1) * (x.step_one - fastest) for x, floor in zip(nodes, floors)]

    def rides(self, nodes: list[SimNode], floors: list[float]) -> list[np.ndarray]:
        """Per node, by how many of its blocks a chain rides, a lower bound on the seconds per token of any
        chain through it as the nodes sit, for a client in any region, each node stepping one token and
        sending one token's state (chains.py). Relayed: the cheapest cover of the blocks before where it is
        boarded, its own hop, the cheapest cover of those after, each hop a round trip. Pushed: the fastest
        chain through it, each link node to node as the simulation's `_trip` times it. A lab: the placement-free floor."""
        if self.cfg.lab is not None:
            return self.free_rides(nodes, floors)
        if self.cfg.push:
            return self._pushed_rides(nodes)
        n = self.model.num_blocks
        per_block = [x.step_one for x in nodes]
        per_region = [chains.fastest_by_ride(nodes, [self._hop_fixed(network.Endpoint(region), x) for x in nodes],
                                             per_block, n) for region in network.REGIONS]
        return [np.minimum.reduce(rides) for rides in zip(*per_region)]

    def _pushed_rides(self, nodes: list[SimNode]) -> list[np.ndarray]:
        """`rides` for pushed chains, costed as the simulation's `_trip`'s pushed branch: the client's own seconds, its token's
        state up and a message to the first node; a message, the state on and the blocks' steps at each node;
        half a round trip in from the client, node to node, and back out."""
        m, cfg = self.model, self.cfg
        clients = [network.Endpoint(region) for region in network.REGIONS]
        places = [x.endpoint for x in nodes]
        out = self._one_ways(clients, places)
        entry = out + cfg.client_s + m.hidden_bytes / self.client_upload + cfg.message_s
        rings = np.array([x.ring for x in nodes], dtype=bool)
        # a chain from a ring node to a ring node decodes as a ring, the client out of it: no way in from the
        # client to a ring node or back from one (looser than `closes_ring`, and the ring's link from last to
        # first and its LM head left out: a lower bound still)
        entry[:, rings], out[:, rings] = 0.0, 0.0
        return chains.fastest_pushed_by_ride(nodes, entry, out, self._one_ways(places, places),
                                             [cfg.message_s + m.hidden_bytes / x.upload for x in nodes],
                                             [x.step_one for x in nodes], m.num_blocks)

    def _one_ways(self, sources: list[network.Endpoint], targets: list[network.Endpoint]) -> np.ndarray:
        """Half the round trip (the simulation's `_link_rtt`) from each source to each target, [source, target]: worked out
        once per pair of distinct places (region and relay), of which there are few."""
        keys = {(e.region, e.relay): e for e in (*sources, *targets)}
        index = {key: i for i, key in enumerate(keys)}
        table = np.array([[self.link_rtt(a, b) / 2 for b in keys.values()] for a in keys.values()])
        return table[np.ix_([index[e.region, e.relay] for e in sources], [index[e.region, e.relay] for e in targets])]
