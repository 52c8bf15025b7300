"""The operator CLI, run as a real process: `python -m ledger.cli ledger ...`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ledger.cli import parse_time
from ledger.errors import UsageError
from ledger.keys import Identity
from ledger.store import Store

REPO = Path(__file__).resolve().parents[2]
HOUR = 3600 * 10**9


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", "ledger", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.fixture(scope="module")
def node_ledger(tmp_path_factory: pytest.TempPathFactory, samples) -> tuple[Path, str, str]:
    """A node's ledger: two loads, a receipted and an unreceipted session, at known times."""
    path = tmp_path_factory.mktemp("cli") / "node.sqlite"
    node, client = Identity.generate(), Identity.generate()
    now = datetime.now(timezone.utc).timestamp() * 10**9
    with Store(path, node) as store:
        store.append_sync(samples.load(0))
        store.append_sync(samples.load(10))
        store.append_sync(samples.serve(node, client, "night", (10, 12), time_ns=int(now - 10 * HOUR)))
        store.append_sync(samples.serve(node, None, "recent", (0, 2), time_ns=int(now - HOUR)))
    return path, node.peer_id, client.peer_id


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_tail_shows_the_newest_entries(node_ledger) -> None:
    path, _, _ = node_ledger
    result = run("tail", "-n", "2", "--json", "--ledger", str(path))
    assert result.returncode == 0, result.stderr
    assert [e["index"] for e in _json_lines(result.stdout)] == [3, 4]
    table = run("tail", env={"SWARMLM_LEDGER": str(path)})
    assert table.returncode == 0 and "serve" in table.stdout and "UNRECEIPTED" in table.stdout


def test_ledger_path_defaults_to_swarmlm_home(node_ledger, tmp_path: Path) -> None:
    path, _, _ = node_ledger
    (tmp_path / "ledger.sqlite").symlink_to(path)
    env = {"SWARMLM_LEDGER": "", "SWARMLM_HOME": str(tmp_path)}
    assert run("show", "0", "--json", env=env).returncode == 0


def test_ledger_path_defaults_to_the_nodes_ledger(node_ledger, tmp_path: Path) -> None:
    """A node writes $SWARMLM_HOME/node/ledger.sqlite: the README's `swarmlm ledger query` finds it."""
    path, node, _ = node_ledger
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "ledger.sqlite").symlink_to(path)
    env = {"SWARMLM_LEDGER": "", "SWARMLM_HOME": str(tmp_path)}
    shown = run("query", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert len(_json_lines(shown.stdout)) == 5
    newest = _json_lines(run("query", "--json", "-n", "2", env=env).stdout)
    assert [e["index"] for e in newest] == [3, 4]


def test_show_prints_one_entry_in_full(node_ledger) -> None:
    path, node, client = node_ledger
    shown = json.loads(run("show", "3", "--json", "--ledger", str(path)).stdout)
    assert shown["entry"]["kind"] == "serve" and shown["entry"]["receipt"]["client"] == client
    assert shown["entry"]["receipt"]["node"] == node and len(shown["signature"]) == 128


def test_query_answers_who_served_a_block_last_night(node_ledger) -> None:
    path, node, _ = node_ledger
    query = ["query", "--json", "--ledger", str(path)]
    by_block = _json_lines(run(*query, "--block", "11").stdout)
    assert [e["index"] for e in by_block] == [2, 3]
    assert [e["index"] for e in _json_lines(run(*query, "--block", "11", "--kind", "serve").stdout)] == [3]
    assert [
        e["index"] for e in _json_lines(run(*query, "--kind", "serve", "--since", "12h", "--until", "2h").stdout)
    ] == [3]
    assert [e["index"] for e in _json_lines(run(*query, "--kind", "serve", "--since", "2h").stdout)] == [4]
    assert len(_json_lines(run(*query, "--node", node).stdout)) == 5
    assert _json_lines(run(*query, "--node", Identity.generate().peer_id).stdout) == []
    root = by_block[0]["entry"]["manifest_root"]
    assert len(_json_lines(run(*query, "--model", root).stdout)) == 4
    assert _json_lines(run(*query, "--model", "00" * 32).stdout) == []
    assert [e["index"] for e in _json_lines(run(*query, "--session", "night").stdout)] == [3]
    assert _json_lines(run(*query, "--session", "nobody").stdout) == []


def test_bad_arguments_are_user_errors(node_ledger, tmp_path: Path) -> None:
    path, _, _ = node_ledger
    for args in (["query", "--since", "last tuesday"], ["query", "--model", "abc"], ["show", "99"]):
        result = run(*args, "--ledger", str(path))
        assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    missing = run("tail", "--ledger", str(tmp_path / "absent.sqlite"))
    assert missing.returncode == 2 and "--ledger" in missing.stderr


def test_verify_passes_then_fails_naming_the_entry(node_ledger, tmp_path: Path) -> None:
    path, _, _ = node_ledger
    ok = run("verify", str(path), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["entries"] == 5
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(path.read_bytes())
    conn = sqlite3.connect(copy)
    conn.execute("DROP TRIGGER entries_no_delete")
    conn.execute("DELETE FROM entries WHERE idx = 2")
    conn.commit()
    conn.close()
    failed = run("verify", "--ledger", str(copy), "--json")
    assert failed.returncode == 1 and json.loads(failed.stdout)["first_bad_index"] == 2
    assert "entry 2" in failed.stderr


def test_prove_then_check_proof_offline(node_ledger, tmp_path: Path) -> None:
    path, node, _ = node_ledger
    proof_file = tmp_path / "proof.json"
    assert run("prove", "3", "--out", str(proof_file), "--ledger", str(path)).returncode == 0
    checked = run("check-proof", str(proof_file), "--peer", node, "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["entry"]["session"] == "night"

    doc = json.loads(proof_file.read_text())
    tampered = [
        {**doc, "index": 2},
        {**doc, "proof": doc["proof"][:-1]},
        {
            **doc,
            "proof": [
                doc["proof"][0].replace(doc["proof"][0][0], "A" if doc["proof"][0][0] != "A" else "B", 1),
                *doc["proof"][1:],
            ],
        },
        {**doc, "checkpoint": doc["checkpoint"].replace("\n5\n", "\n6\n")},
        {**doc, "peer_id": Identity.generate().peer_id},
        {**doc, "extra": 1},
    ]
    for bad in tampered:
        proof_file.write_text(json.dumps(bad))
        result = run("check-proof", str(proof_file))
        assert result.returncode == 1 and "INVALID" in result.stderr
    proof_file.write_text(json.dumps(doc))
    wrong_peer = run("check-proof", str(proof_file), "--peer", Identity.generate().peer_id)
    assert wrong_peer.returncode == 1


def test_export_writes_every_entry_as_json_lines(node_ledger, tmp_path: Path) -> None:
    path, _, _ = node_ledger
    out = tmp_path / "export.jsonl"
    assert run("export", "--jsonl", "--out", str(out), "--ledger", str(path)).returncode == 0
    records = _json_lines(out.read_text())
    assert [r["index"] for r in records] == list(range(5)) and all(r["data"] for r in records)


def test_tail_follow_prints_new_entries(ledger_path: Path, identity: Identity, samples) -> None:
    with Store(ledger_path, identity) as store:
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger.cli",
                "ledger",
                "tail",
                "-f",
                "--json",
                "--interval",
                "0.05",
                "--ledger",
                str(ledger_path),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert json.loads(follower.stdout.readline())["index"] == 0
            store.append_sync(samples.load(1))
            assert json.loads(follower.stdout.readline())["index"] == 1
        finally:
            follower.kill()
            follower.communicate()


def test_times_parse_as_iso_or_relative() -> None:
    now = datetime(2025, 1, 31, 22, 0, tzinfo=timezone.utc)
    assert parse_time("12h", now) == int((now - timedelta(hours=12)).timestamp()) * 10**9
    assert parse_time("2025-01-31T22:00:00+00:00") == int(now.timestamp()) * 10**9
    for bad in ("12x", "h12", "tomorrow", ""):
        with pytest.raises(UsageError):
            parse_time(bad, now)


def test_missing_ledger_names_the_places_tried(tmp_path: Path) -> None:
    result = run("tail", env={"SWARMLM_LEDGER": "", "SWARMLM_HOME": str(tmp_path)})
    assert result.returncode != 0
    assert str(tmp_path / "node" / "ledger.sqlite") in result.stderr and "--ledger" in result.stderr


def test_wide_tables_show_whole_ids_to_paste(node_ledger) -> None:
    path, node, client = node_ledger
    query = ["query", "--kind", "serve", "--ledger", str(path)]
    root = _json_lines(run(*query, "--json").stdout)[0]["entry"]["manifest_root"]
    narrow, wide = run(*query).stdout, run(*query, "--wide").stdout
    assert node[-10:] in narrow and node not in narrow and root not in narrow
    assert all(whole in wide for whole in (node, client, root))
    assert node in run("tail", "--wide", "--ledger", str(path)).stdout
