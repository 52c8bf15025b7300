"""How many untrusted items this process dropped, by kind: the visible trace of hostile peers.

Identities are free, so every record, evidence document, receipt, checkpoint and frame from the
DHT or a peer may be written by an attacker. Each is parsed strictly where it arrives, and a bad
one is dropped there, never raised to the caller: `dropped` counts it (process-wide, so a node's
metrics and an SDK user's `snapshot()` both see it) and logs the reason at debug level.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

# A malformed step attestation is not among them: it fails its node (routing/attestation.py), and
# a kind that nothing counts would only export a zero.
KINDS = ("record", "evidence", "receipt", "checkpoint", "frame")

_lock = threading.Lock()
_dropped = dict.fromkeys(KINDS, 0)


def dropped(kind: str, reason: str) -> None:
    """Count one dropped item of `kind` (KINDS, or a new kind, counted from then on); `reason`
    says from whom and why."""
    with _lock:
        _dropped[kind] = _dropped.get(kind, 0) + 1
    log.debug("dropped a %s %s", kind, reason)


def snapshot() -> dict[str, int]:
    """Dropped items so far, by kind (every kind of KINDS present, zeros included)."""
    with _lock:
        return dict(_dropped)
