"""What this peer's relay service has carried for private nodes, read from p2pd's own metrics.

p2pd counts what its circuit relay forwards (`libp2p_relaysvc_*` in its Prometheus endpoint, on
when started with `-metricsAddr`); nothing else sees those bytes, since a relayed stream never
reaches our process. The endpoint is bound to localhost only: it also describes every connection.
"""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

READ_TIMEOUT = 1.0  # s: a local scrape; p2pd busy or gone costs one scrape its relay figures


@dataclass(frozen=True)
class RelayStats:
    bytes: int = 0                # relayed, both directions, all circuits since p2pd started
    circuits_opened: int = 0
    circuits_closed: int = 0
    reservations_opened: int = 0  # reservations granted (renewals not counted)


def free_local_port() -> int:
    """A TCP port free on localhost now, for p2pd's metrics endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def p2pd_flags(port: int) -> dict[str, Any]:
    return {"metricsAddr": f"127.0.0.1:{port}"}


def parse(text: str) -> RelayStats:
    """The relay service's counters in p2pd's Prometheus text (a counter not yet used is absent: 0)."""
    found: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("libp2p_relaysvc_"):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            kind = sample.labels.get("type", "")
            key = {"libp2p_relaysvc_data_transferred_bytes_total": "bytes",
                   "libp2p_relaysvc_connections_total": f"circuits_{kind}",
                   "libp2p_relaysvc_reservations_total": f"reservations_{kind}"}.get(sample.name)
            if key in RelayStats.__dataclass_fields__:
                found[key] = found.get(key, 0) + int(sample.value)
    return RelayStats(**found)


def read(port: int, timeout: float = READ_TIMEOUT) -> RelayStats | None:
    """p2pd's relay counters now, or None if its endpoint does not answer. Blocking: call off the loop."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as reply:
            return parse(reply.read().decode())
    except (OSError, ValueError):
        return None
