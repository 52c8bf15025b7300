"""A node announces as soon as its load moves (node/freshness.py), not only every period (a real node process)."""

from __future__ import annotations

from node.local_swarm import LocalSwarm
from routing.client import SwarmClient
from tests.conftest import FIXED_THROUGHPUT
from tests.swarm.raw import RawSession
from tests.waiting import until


def test_a_node_announces_its_new_sessions_long_before_its_period(default_store, tmp_path):
    """Its period is 10 minutes; two sessions opening show in its record within seconds, and so does
    their closing."""
    root = default_store.root
    with LocalSwarm(str(default_store.path), tmp_path, announce_period=600.0, node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start(1, default_store.manifest.num_blocks)
        node = swarm.nodes[0]
        client = SwarmClient(swarm.initial_peers)
        try:
            def shown() -> int:
                record = client.run(client.records(root, default_store.manifest.num_blocks)).get(node.peer_id)
                return -1 if record is None else record.active_sessions

            assert until(shown, lambda n: n >= 0, timeout=60) == 0
            sessions = [RawSession(client, node.peer_id, root, f"load-{i}", 16) for i in range(2)]
            for s in sessions:
                assert client.run(s.open())["type"] == "opened"
            assert until(shown, lambda n: n == 2, timeout=60, interval=0.5) == 2
            for s in sessions:
                assert client.run(s.close())["type"] == "closed"
            assert until(shown, lambda n: n == 0, timeout=60, interval=0.5) == 0
        finally:
            client.close()
