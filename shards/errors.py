"""Errors a user of the shards package can cause, each with a message that says what to do."""


class ShardsError(Exception):
    """Base class: the CLI prints the message and exits with status 2, without a traceback."""


class NotAModelError(ShardsError):
    """A path given as a model is not a GGUF file, a Hugging Face folder, or a packed store."""


class UnsupportedModelError(ShardsError):
    """The model's architecture uses a feature our blocks do not implement."""


class ShardIntegrityError(ShardsError):
    """A shard's bytes do not match the digest in the manifest."""

    def __init__(self, bad: list[str], detail: str = "") -> None:
        self.bad = bad
        names = ", ".join(bad)
        super().__init__(
            f"shard digest mismatch: {names}{detail}; the store is corrupt or was modified — "
            "re-pack it with `swarmlm shards pack` or `swarmlm shards pull`"
        )


class CacheLengthError(ShardsError):
    """A step would write past a session's fixed maximum length, or leave a gap in its cache."""


class DownloadError(ShardsError):
    """Fetching a catalogued model failed or produced unexpected bytes."""


class CacheFullError(ShardsError):
    """A KV page pool has no free page for a row that must grow."""
