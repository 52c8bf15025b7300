"""SwarmLM: the public face — the SDK (`swarmlm.RemoteModel`, `swarmlm.LocalModel`) and the CLI."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import the SDK lazily, so `swarmlm --help` does not pay for torch and hivemind."""
    if name == "RemoteModel":
        from .sdk import RemoteModel

        return RemoteModel
    if name == "LocalModel":
        from shards.local import LocalModel

        return LocalModel
    raise AttributeError(name)
