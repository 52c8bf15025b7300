"""Errors a node operator can cause (bad flags, config, ports); the CLI prints them and exits 2."""


class NodeError(Exception):
    """Base class of node errors with an actionable message."""


class ConfigError(NodeError):
    """An option's value is invalid, or the config file cannot be read."""
