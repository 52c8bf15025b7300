"""`swarm status` shows the coverage map (and its holes); `node status` one node's vital signs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from node.local_swarm import LocalSwarm
from tests.cli_call import run_cli
from tests.ops.test_cli_startup import RUN
from tests.waiting import until


def _status(swarm, capsys) -> tuple[int, dict]:
    proc = run_cli(["swarm", "status", "--json", "--peers", *swarm.initial_peers], capsys)
    return proc.returncode, json.loads(proc.stdout)


def test_swarm_status_covers_every_block_and_node_status_shows_one_node(swarm3, cli_env, tmp_path, capsys):
    code, report = _status(swarm3, capsys)
    assert code == 0 and report["unserved"] == [] and report["servers_per_block"] == [1] * 30
    assert sorted(tuple(n["blocks"]) for n in report["nodes"]) == [(0, 10), (10, 20), (20, 30)]
    assert report["totals"]["online"] == 3

    local = run_cli(["node", "status", "--identity", f"{swarm3.nodes[0].state_dir}/identity.key", "--json"], capsys)
    info = json.loads(local.stdout)
    assert info["peer_id"] == swarm3.nodes[0].peer_id and info["state"] == "online"
    assert [info["start"], info["end"]] == list(swarm3.nodes[0].blocks)
    quick = subprocess.run([sys.executable, "-c", RUN, "node", "status", "--identity",  # the local status port
                            f"{swarm3.nodes[2].state_dir}/identity.key", "--json"], capture_output=True, text=True,
                           env=cli_env, timeout=60)
    *shown, report = quick.stdout.strip().splitlines()
    assert json.loads("\n".join(shown))["peer_id"] == swarm3.nodes[2].peer_id
    assert json.loads(report) == {"code": 0, "loaded": []}  # no hivemind, no torch: well under a second
    config = tmp_path / "node.toml"
    config.write_text(f'state_dir = "{swarm3.nodes[1].state_dir}"\n')
    by_config = run_cli(["node", "status", "--config", str(config), "--json"], capsys)
    assert json.loads(by_config.stdout)["peer_id"] == swarm3.nodes[1].peer_id


def test_swarm_status_shows_a_dead_nodes_blocks_unserved(default_store, tmp_path, capsys):
    with LocalSwarm(str(default_store.path), tmp_path, announce_period=2.0) as swarm:
        swarm.start(2, 30)
        code, report = _status(swarm, capsys)
        assert code == 0 and report["unserved"] == [] and report["totals"]["online"] == 2

        second = next(n for n in swarm.nodes if n.blocks == (15, 30))
        swarm.kill(second, signal.SIGKILL)
        code, report = until(lambda: _status(swarm, capsys), lambda status: status[1]["unserved"],
                             timeout=60, interval=1)  # its records expire after 3 announce periods
        assert code == 1 and report["unserved"] == list(range(15, 30))
        assert report["totals"]["blocks_covered"] == 15


def test_swarm_status_human_output(swarm3, capsys):
    proc = run_cli(["swarm", "status", "--peers", *swarm3.initial_peers], capsys)
    assert proc.returncode == 0
    assert "30/30 blocks covered" in proc.stdout and "servers per block: " + "1" * 30 in proc.stdout
    wide = run_cli(["swarm", "status", "--wide", "--peers", *swarm3.initial_peers], capsys).stdout
    assert all(node.peer_id in wide for node in swarm3.nodes)
