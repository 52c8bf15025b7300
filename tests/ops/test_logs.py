"""`--log-format json`: every line a node logs is one JSON object; `text` stays the human format."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from node.local_swarm import LocalSwarm
from node.logs import setup_logging

PROTOCOL_LINES = ("maddr ", "ready ")  # stdout lines LocalSwarm and scripts parse; not log lines


@pytest.fixture
def restore_logging():
    """setup_logging changes process-wide state; put back what pytest and hivemind had."""
    root, hive = logging.getLogger(), logging.getLogger("hivemind")
    saved = (list(root.handlers), root.level, list(hive.handlers), hive.level, hive.propagate)
    yield
    root.handlers[:], root.level, hive.handlers[:], hive.level, hive.propagate = saved
    logging.captureWarnings(False)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line and not line.startswith(PROTOCOL_LINES)]


def test_json_lines_carry_time_level_logger_message_and_extra_fields(restore_logging, capsys):
    setup_logging("json", verbose=False)
    logging.getLogger("node.handlers").info("session close %s", "s1", extra={"tokens": 34, "blocks": [0, 30]})
    logging.getLogger("hivemind.dht").warning("routed through our handler")
    logging.getLogger("hivemind.dht").info("hidden unless --verbose")
    warnings.warn("a library's deprecation")
    lines = json_lines(capsys.readouterr().err)
    assert [(line["level"], line["logger"]) for line in lines] == [
        ("info", "node.handlers"), ("warning", "hivemind.dht"), ("warning", "py.warnings")]
    first = lines[0]
    assert (first["message"], first["tokens"], first["blocks"]) == ("session close s1", 34, [0, 30])
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert all("exception" not in line for line in lines)


def test_a_logged_exception_stays_one_line_with_its_traceback_in_a_field(restore_logging, capsys):
    setup_logging("json", verbose=True)
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("node.handlers").exception("internal error serving %s", "peer")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["level"] == "error" and "ZeroDivisionError" in line["exception"]


def test_text_format_replaces_earlier_handlers(restore_logging, capsys):
    logging.basicConfig(format="OLD %(message)s")
    setup_logging("text", verbose=False)
    logging.getLogger("node.server").info("node stopped")
    err = capsys.readouterr().err
    assert "OLD" not in err and " INFO node.server: node stopped" in err


@pytest.mark.swarm
def test_a_json_node_logs_its_sessions_as_json_lines(default_store, tmp_path: Path):
    from swarmlm.sdk import RemoteModel

    swarm = LocalSwarm(str(default_store.path), tmp_path, node_args=["--log-format", "json"])
    with swarm:
        swarm.start(1, default_store.manifest.num_blocks)
        node_log = Path(swarm.nodes[0].log)
        with RemoteModel.connect(swarm.initial_peers, default_store.path) as model:
            model.generate("Hi", 3, ignore_eos=True)
    lines = json_lines(node_log.read_text())  # raises if any log line is not JSON
    messages = [line["message"] for line in lines if line["logger"] == "node.serving"]
    assert [m.split()[:2] for m in messages] == [["session", "open"], ["session", "close"]]
    assert "blocks=0:30" in messages[1] and "tokens=" in messages[1] and "duration=" in messages[1]
    assert lines[-1]["message"].endswith("stopped")


def test_swarmlm_debug_prints_the_named_loggers_debug_lines_only(restore_logging, capsys, monkeypatch):
    """Following one part of a node (every step it computes: `node.inference`) without hivemind's flood."""
    monkeypatch.setenv("SWARMLM_DEBUG", "node.inference, routing.span")
    named = [logging.getLogger(n) for n in ("node.inference", "routing.span")]
    try:
        setup_logging("text", verbose=False)
        named[0].debug("session s1 step 3: positions 7..7, relayed, held 7")
        named[1].debug("passed over a result")
        logging.getLogger("node.server").debug("not named")
        logging.getLogger("hivemind.dht").debug("not named either")
    finally:
        for logger in named:
            logger.setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "positions 7..7" in err and "passed over a result" in err
    assert "not named" not in err
