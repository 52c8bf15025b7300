"""Log output for people (`text`) or for log shippers (`json`, one object per line).

Everything a node logs goes through the root logger's one handler: our loggers, hivemind's
(which otherwise keeps a coloured handler of its own) and Python warnings. So with
`--log-format json` every log line parses, and journald or Loki gets fields, not prose.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any, Callable

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


DEBUG_ENV = "SWARMLM_DEBUG"  # comma-separated logger names whose debug lines a node prints, e.g. node.inference


def setup_logging(fmt: str, verbose: bool) -> None:
    """Replace whatever handlers the root logger has with one stderr handler in `fmt` ("text"/"json").

    `verbose` prints every logger's debug lines, hivemind's included; `SWARMLM_DEBUG` names the only
    loggers that do, so one part (say every step a node computes) can be followed without the rest."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    global _hivemind_level
    _hivemind_level = logging.DEBUG if verbose else logging.WARNING  # its INFO lines are for its developers
    logging.getLogger("hivemind").setLevel(_hivemind_level)
    for name in filter(None, (n.strip() for n in os.environ.get(DEBUG_ENV, "").split(","))):
        logging.getLogger(name).setLevel(logging.DEBUG)
    if _HIVEMIND_LOGGING in sys.modules:
        _route_hivemind()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        # importing hivemind costs seconds (it imports torch): a command that never uses it must not pay that
        sys.meta_path.insert(0, _AfterImport(_HIVEMIND_LOGGING, _route_hivemind))
    logging.captureWarnings(True)


_HIVEMIND_LOGGING = "hivemind.utils.logging"
_hivemind_level = logging.WARNING


def _route_hivemind() -> None:
    """hivemind's lines propagate to our handler instead of its own coloured one."""
    from hivemind.utils.logging import use_hivemind_log_handler

    use_hivemind_log_handler("nowhere")
    logging.getLogger("hivemind").setLevel(_hivemind_level)


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs `then` right after module `name` first executes, before any module that imports it goes on."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name, self.then, self.loader = name, then, None

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        self.then()
