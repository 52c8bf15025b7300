"""Routing: the DHT records, the wire protocol, the client's planner, failover and verification."""

from .hivemind_import import register_bare_package

register_bare_package()
