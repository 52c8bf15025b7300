"""Where SwarmLM keeps its state: `$SWARMLM_HOME` (default ~/.cache/swarmlm)."""

from __future__ import annotations

import os
from pathlib import Path


def swarmlm_home() -> Path:
    return Path(os.environ.get("SWARMLM_HOME") or Path.home() / ".cache" / "swarmlm").expanduser()


def models_dir() -> Path:
    return swarmlm_home() / "models"


def downloads_dir() -> Path:
    return swarmlm_home() / "downloads"
