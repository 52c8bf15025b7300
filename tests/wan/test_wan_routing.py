"""Latency-aware routing through the lab: a pushed chain is judged by its node-to-node links, which
the nodes measure and announce; a relayed one by the client's own links.

Node A serves blocks 0:15; B and C both serve 15:30. The link A-B is slow, so pushing through B
costs more than through C; the client's link to C is slower than to B, so relaying favours B.
Every node announces the same throughput, so only the links decide.

The planner clamps a claimed link to the triangle the client's own round trips span (A-B at most
client-A + client-B), so the links keep to it with room: the client is far from A (200 ms), or A-B
would be priced at 120 ms and both pushed chains would cost the same (CI once picked B on ping noise).
Pushed, via B costs (200 + 250 + 60) / 2 and via C (200 + 60 + 140) / 2, 55 ms more; relayed, B saves
80 ms a token. A single ping reads up to ~40 ms high on a loaded machine, and both margins survive it.
"""

from __future__ import annotations

import pytest
from wan_client import WanClient, swarm_in_lab

from ..waiting import until

PROMPT = "What is the capital of France?"
RTT_MS, FAR_FIRST_MS, SLOW_PUSH_MS, SLOW_CLIENT_MS = 60, 200, 250, 140
LINKS = {frozenset({"client", "node-1"}): FAR_FIRST_MS, frozenset({"node-1", "node-2"}): SLOW_PUSH_MS,
         frozenset({"client", "node-3"}): SLOW_CLIENT_MS}

pytestmark = pytest.mark.swarm


def _announced(client: WanClient, node: str, neighbours: set[str]) -> bool:
    """Whether both of the client's views hold every node's record, `node`'s with round trips to all
    `neighbours` (records lapse and return on a busy machine; planning uses the latest view)."""
    for push in (True, False):
        records = {r["peer_id"]: r for r in client.records(push)["records"]}
        if not ({node} | neighbours) <= records.keys() or not neighbours <= records[node]["rtt_ms"].keys():
            return False
    return True


def test_each_mode_picks_the_chain_that_is_fast_on_the_path_it_uses(default_store, local_model, tmp_path):
    with swarm_in_lab(str(default_store.path), tmp_path, [(0, 15), (15, 30), (15, 30)], rtt_ms=RTT_MS,
                      link_rtt_ms=LINKS, announce_period=3, node_args=["--throughput", "1000"]) as (_, swarm, client):
        a, b, c = (n.peer_id for n in swarm.nodes)
        assert until(lambda: _announced(client, a, {b, c}), timeout=120, interval=0.1), "node A never announced B and C"
        pushed = client.generate(PROMPT, 8, push=True)
        relayed = client.generate(PROMPT, 8, push=False)
        view = client.records(push=False)
    claims = next(r["rtt_ms"] for r in view["records"] if r["peer_id"] == a)
    assert claims[b] > claims[c]  # what the nodes measured and announced: A-B is the slow push link
    client_rtt = view["client_rtt_ms"]
    assert client_rtt[c] > client_rtt[b]  # what the client measured itself: its link to C is the slow one
    assert [hop["peer_id"] for hop in pushed.extra["chain"]] == [a, c]
    assert [hop["peer_id"] for hop in relayed.extra["chain"]] == [a, b]
    want = local_model.generate(PROMPT, 8).token_ids
    assert pushed.token_ids == relayed.token_ids == want
