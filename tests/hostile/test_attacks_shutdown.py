"""The shutdown attack of issue 11: a node told to stop while it serves must drain, log its
sessions and exit 0 within a bound, however the signal arrives (real node processes)."""

from __future__ import annotations

import os
import signal

import pytest

from node.local_swarm import LocalSwarm
from routing.dht import DHT_TIMEOUT
from tests.swarm.raw import RawSession

from .attacker import Attacker, fresh_session, serve_entries

DRAIN_GRACE = 5.0
# Announcing `draining` and `offline` may each wait DHT_TIMEOUT on a dead DHT, then the drain, then slack.
EXIT_BOUND = 2 * DHT_TIMEOUT + DRAIN_GRACE + 30


@pytest.fixture(scope="module")
def bootstrap(default_store, tmp_path_factory):
    with LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("shutdown"), announce_period=5.0) as swarm:
        swarm.start(0, default_store.manifest.num_blocks)
        yield swarm


@pytest.mark.parametrize("kill_mode", ["control-group", "mixed"])
def test_sigterm_mid_session_drains_logs_the_session_and_exits_0(bootstrap, default_store, kill_mode):
    """systemd's KillMode=control-group sends SIGTERM to the node, its DHT process and p2pd at
    once (measured: exit 0 after 31 s, two announcements timing out on the dead DHT); mixed sends
    it to the node alone, which drains its live session for --drain-grace (measured: 6 s). Either
    way the session gets its `serve` entry."""
    node = bootstrap.spawn_node((0, 10), extra=["--throughput", "5", "--drain-grace", str(DRAIN_GRACE)])
    attacker = Attacker(bootstrap.initial_peers, [node])
    session = RawSession(attacker.link, node.peer_id, default_store.root, fresh_session(), 64)
    try:
        assert attacker.run(session.open())["type"] == "opened"
        assert attacker.run(session.step(0, 4))["type"] == "result"
        if kill_mode == "control-group":
            os.killpg(node.pid, signal.SIGTERM)
        else:
            os.kill(node.pid, signal.SIGTERM)
        assert node.process.wait(timeout=EXIT_BOUND) == 0
        logged = [e.tokens for e in serve_entries(node, session=session.session) if e.session == session.session]
        assert logged == [4]
    finally:
        session.abort()
        attacker.close()
        bootstrap.kill(node)
