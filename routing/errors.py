"""Errors of routing and the wire protocol; each names what went wrong and what to do."""

from __future__ import annotations

from enum import Enum


class RoutingError(Exception):
    """Base class: the CLI prints the message and exits 2."""


class ErrorCode(str, Enum):
    """Typed reasons in error frames, so clients can react (retry elsewhere, shrink, give up)."""

    BAD_FRAME = "bad_frame"  # not a msgpack map, missing or mistyped field, unknown message type
    VERSION = "version"  # protocol version the node does not speak
    BAD_TENSOR = "bad_tensor"  # dtype, shape or byte size inconsistent, or wrong hidden size
    TOO_LARGE = "too_large"  # frame, batch or step over the node's limits
    BAD_POSITION = "bad_position"  # a step that leaves a gap in the cache
    MAX_LENGTH = "max_length"  # a step past the session's max length
    UNKNOWN_SESSION = "unknown_session"
    SESSION_EXPIRED = "session_expired"  # idle too long, or the node is leaving: reopen (elsewhere) and replay
    CACHE_FULL = "cache_full"  # the node's KV-cache pool cannot hold the session
    CACHE_RECLAIMED = "cache_reclaimed"  # your peer held more than its fair share and another needed pages: replay
    DRAINING = "draining"  # the node is leaving or moving and takes no new sessions
    WRONG_MODEL = "wrong_model"  # asked for another manifest root or span
    BAD_RECEIPT = "bad_receipt"
    BUSY = "busy"  # the node has too much of your work queued, or no memory to read your frame now: retry later
    PEER_LIMIT = "peer_limit"  # over a per-client limit (streams, sessions, cache): use another node or fewer
    TIMEOUT = "timeout"  # a frame did not arrive (in full) in time
    PUSH_REFUSED = "push_refused"  # a pushed hop from a peer the session's client did not name, or no such session
    LEDGER_UNAVAILABLE = "ledger_unavailable"  # the node cannot record sessions now, so it takes none
    INTERNAL = "internal"


class ProtocolError(RoutingError):
    """A frame failed validation; the node answers with an error frame carrying `code`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class RemoteError(RoutingError):
    """A node answered with an error frame."""

    def __init__(self, peer: str, code: str, message: str) -> None:
        super().__init__(f"node {peer[-8:]} refused: [{code}] {message}")
        self.peer, self.code, self.remote_message = peer, code, message


class NoRouteError(RoutingError):
    """No chain of online nodes covers every block of the model."""


class PeerFailure(RoutingError):
    """A node failed mid-request (stream closed, timeout, error frame); the client fails over."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"node {peer[-8:]} failed: {reason}")
        self.peer, self.reason = peer, reason


class StreamClosed(PeerFailure):
    """The stream ended before its reply: a reset or a node gone mid-request."""


class PeerSilent(PeerFailure):
    """Nothing came back within the timeout: the node is stuck, or the path to it is (a relay that
    stalls with its connections open), so the client dials it afresh before trying it again."""
