"""SwarmLM: the public face — the SDK and the `swarmlm` command."""

__version__ = "0.1.0"
