"""Log output for people (`text`) or for log shippers (`json`, one object per line).

Everything a node logs goes through the root logger's one handler: our loggers, hivemind's
(which otherwise keeps a coloured handler of its own) and Python warnings. So with
`--log-format json` every log line parses, and journald or Loki gets fields, not prose.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# hivemind renames WARNING to "WARN" process-wide; JSON consumers get the standard names.
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
           logging.CRITICAL: "critical"}
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "origin_created"}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", …extra}`; a traceback only where one was logged (a bug)."""

    def format(self, record: logging.LogRecord) -> str:
        created = getattr(record, "origin_created", record.created)  # hivemind's time of a relayed line
        line = {"time": datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": _LEVELS.get(record.levelno, record.levelname.lower()), "logger": record.name,
                "message": record.getMessage()}
        line.update((k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(fmt: str, verbose: bool) -> None:
    """Replace whatever handlers the root logger has with one stderr handler in `fmt` ("text"/"json")."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    from hivemind.utils.logging import use_hivemind_log_handler  # not at import: see swarmlm/cli.py

    use_hivemind_log_handler("nowhere")  # hivemind's lines propagate to our handler
    # hivemind's INFO lines are for its developers, not our users
    logging.getLogger("hivemind").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.captureWarnings(True)
