"""A node whose ledger disk fills up (real tmpfs, real node): served ⇒ logged, or loudly refused.

The session served while the disk is full is logged once there is room again; meanwhile the node
says so (info, `node status`) and takes no session it could not record.
"""

from __future__ import annotations


from ledger.store import Ledger
from node.local_swarm import LocalSwarm
from routing.client import SwarmClient
from swarmlm.sdk import RemoteModel

from ..full_disk import fill, tmpfs
from ..waiting import until
from .raw import RawSession, info

PROMPT = "What is the capital of France?"


def test_a_full_ledger_disk_refuses_new_sessions_and_loses_no_entry(default_store, tmp_path, local_model):
    with tmpfs(tmp_path / "disk", size="4m") as disk, LocalSwarm(str(default_store.path), tmp_path / "swarm") as swarm:
        swarm.start(0, 30)
        node = swarm.spawn_node((0, 30), extra=["--ledger", str(disk / "ledger.sqlite")])
        probe = SwarmClient(swarm.initial_peers)
        probe.remember(node.peer_id, node.maddrs)

        def health() -> dict:
            return probe.run(info(probe, node.peer_id), timeout=30)["ledger_health"]

        try:
            with RemoteModel.connect(swarm.initial_peers, default_store.path) as model:
                filler = fill(disk)
                with model.inference_session(max_length=64) as s:
                    g = s.generate(PROMPT, 8)
                    session = s.runner.session_id
                assert g.token_ids == local_model.generate(PROMPT, 8).token_ids
                assert until(lambda: not health()["ok"])  # the session's serve entry waits for room
                assert health()["pending"] >= 1

                async def try_open() -> dict:
                    raw = RawSession(probe, node.peer_id, default_store.root, "while-full", 16)
                    try:
                        return await raw.open()
                    finally:
                        raw.abort()

                refused = probe.run(try_open(), timeout=60)
                assert refused["code"] == "ledger_unavailable" and "ledger" in refused["message"]

                filler.unlink()
                assert until(lambda: health()["ok"])
                with Ledger(disk / "ledger.sqlite") as ledger:
                    logged = [e for e in (r.decode() for r in ledger.query(kind="serve")) if e.session == session]
                assert len(logged) == 1 and logged[0].receipt is not None
                assert probe.run(try_open(), timeout=60)["type"] == "opened"
        finally:
            probe.close()
