"""Nodes started with --blocks auto cover the model, join where it is weakest, and heal gaps."""

from __future__ import annotations

import signal

from node.local_swarm import LocalSwarm
from node.selection import best_start, coverage
from routing.client import SwarmClient
from tests.waiting import until


def _records(client: SwarmClient, root: str):
    return client.run(client.records(root, 30))


def test_auto_nodes_cover_all_blocks_join_the_weakest_and_recover_a_loss(default_store, tmp_path):
    root = default_store.root
    swarm = LocalSwarm(str(default_store.path), tmp_path, announce_period=2.0,
                       node_args=["--num-blocks", "15", "--rebalance-period", "3"])  # 2 nodes cover, a 3rd doubles
    with swarm:
        swarm.start(0, 30)
        covering = [swarm.spawn_node() for _ in range(2)]  # one after another, each sees the others
        served = set().union(*(range(*n.blocks) for n in covering))
        assert served == set(range(30)), [n.blocks for n in covering]

        client = SwarmClient(swarm.initial_peers)
        try:
            before = _records(client, root)
            expected = best_start(coverage(before.values(), 30), 15)
            third = swarm.spawn_node()
            assert third.blocks == (expected, expected + 15)

            # Lose a node that alone serves some block; the others must re-cover it.
            cov_without = {n.peer_id: coverage([r for p, r in _records(client, root).items() if p != n.peer_id], 30)
                           for n in covering}
            victim = next(n for n in covering if min(cov_without[n.peer_id]) == 0)
            swarm.kill(victim, signal.SIGKILL)

            def recovered(records: dict) -> bool:
                alive = [r for p, r in records.items() if p != victim.peer_id]
                return min(coverage(alive, 30)) > 0 and victim.peer_id not in {
                    p for p, r in records.items() if r.state == "online"}

            records = until(lambda: _records(client, root), recovered, timeout=120, interval=1)
            alive = {p: r for p, r in records.items() if p != victim.peer_id}
            assert min(coverage(alive.values(), 30)) > 0, {p[-6:]: (r.start, r.end, r.state) for p, r in records.items()}
        finally:
            client.close()
