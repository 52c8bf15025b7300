"""What a session's client asked pushed steps to compute: its signed step tickets, each spent once.

The push grant names who may push into a session, not how much: the predecessor it names (or a
client's own accomplice) could push the same step again and again, and each push rewinds and
recomputes. So a pushed step carries its client's step ticket (routing/grants.py), and a node
computes it only if the ticket's `seq` is above every ticket the session has spent and the push
holds exactly the positions the ticket names: a session computes at most what its client asked
for, step by step. A replay, a push grown past its ticket, or one without a ticket in a session
that uses them is `push_refused` to the pusher (whose client then relays).

A session uses tickets once its client says so when opening (`tickets: true`) or once it has spent
one; until then a push without a ticket is taken, as from clients that sign none. A relayed step's
ticket is spent too: a push that arrives after it (its pusher died after the push left, and the client
relayed that step and went on) holds an older ticket and is refused, instead of rewinding the session
over the positions computed since.

A ring (node/ring.py) runs on one ring ticket: each of its steps is its sampled token's position
and at most the ticket's `drafts` positions after it (speculation), all within the ticket's range;
each step starts past the start of the one before, so it may rewind only over that step's rejected
drafts, and a ring computes at most `tokens` steps. A later step or ring ticket ends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from routing.errors import ErrorCode, ProtocolError
from routing.protocol import MAX_RING_DRAFTS
from routing.grants import RingTicket, accept_ring_ticket, accept_ticket


@dataclass
class StepBudget:
    required: bool = False  # pushes without a ticket are refused
    seq: int = -1  # the highest ticket spent
    requested: int = 0  # positions × rows the spent tickets asked for
    ring: RingTicket | None = None  # the ring ticket in use, if the last ticket spent is one
    ring_at: int = -1  # where the last step under it started

    def spend(self, raw: Any, *, client: str, session: str, start: int, shape: Sequence[int]
              ) -> dict[str, Any] | None:
        """Check the ticket `raw` of a step of `shape` (batch, tokens, …) at `start` and spend it;
        returns it to travel on with the step's output (None: the step came without one)."""
        if raw is None:
            if self.required:
                raise ProtocolError(ErrorCode.PUSH_REFUSED, "a pushed step of this session must carry its "
                                                            "client's signed step ticket")
            return None
        t = accept_ticket(raw, client=client, session=session)
        batch, tokens = shape[0], shape[1]
        if t.seq <= self.seq:
            raise ProtocolError(ErrorCode.PUSH_REFUSED, f"step ticket {t.seq} is spent: the client asked for that step "
                                                        f"once (this session has spent tickets up to {self.seq})")
        if (t.start, t.tokens, t.batch) != (start, tokens, batch):
            raise ProtocolError(ErrorCode.PUSH_REFUSED, f"the ticket asks for {t.tokens} position(s) from {t.start} "
                                                        f"(batch {t.batch}); the push holds {tokens} from {start} "
                                                        f"(batch {batch})")
        self.seq, self.required, self.ring = t.seq, True, None
        self.requested += tokens * batch
        return t.to_wire()

    def spend_ring(self, raw: Any, *, client: str, session: str, start: int, shape: Sequence[int]) -> RingTicket:
        """Check one ring step at `start` against the ring ticket `raw` and count it."""
        t = accept_ring_ticket(raw, client=client, session=session)
        positions, most = shape[1], 1 + min(t.drafts or 0, MAX_RING_DRAFTS)
        if shape[0] != 1 or not 1 <= positions <= most:
            raise ProtocolError(ErrorCode.PUSH_REFUSED, f"a ring step is one row of 1..{most} positions (its sampled "
                                                        "token and the ticket's drafts)")
        if self.ring is not None and t.seq == self.seq:
            if start <= self.ring_at:
                raise ProtocolError(ErrorCode.PUSH_REFUSED, f"ring position {start} was computed already")
        elif t.seq <= self.seq:
            raise ProtocolError(ErrorCode.PUSH_REFUSED, f"ring ticket {t.seq} is spent (this session has spent "
                                                        f"tickets up to {self.seq})")
        if not t.start <= start < start + positions <= t.end:
            raise ProtocolError(ErrorCode.PUSH_REFUSED, f"the ring ticket runs positions {t.start}..{t.end - 1}; "
                                                        f"this step holds {start}..{start + positions - 1}")
        self.seq, self.required, self.ring, self.ring_at = t.seq, True, t, start
        self.requested += positions
        return t
