"""Who computed a session: its id, the chain of nodes with their blocks, and how often it failed over.

A remote runner reports it (routing.chain); results carry it (`Generation.served`), so callers such as
the gateway read provenance from public fields instead of a runner's internals. Local runs have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Link:
    peer_id: str
    start: int  # the node's blocks, half-open [start, end)
    end: int
    tokens: int  # positions it computed in this session


@dataclass(frozen=True)
class ServedBy:
    session_id: str  # the id every node of the chain logs its `serve` entry under
    chain: tuple[Link, ...]  # serving now while the session is open, the receipted chain once it closed
    failovers: int = 0  # nodes replaced mid-session
    relayed_steps: int = 0  # pushed steps the client had to relay (a push failed)
    ring_steps: int = 0  # steps a ring took, its last node sampling (routing/ring.py)

    def to_json(self) -> dict[str, Any]:
        return {"session": self.session_id,
                "chain": [{"peer_id": link.peer_id, "blocks": [link.start, link.end], "tokens": link.tokens}
                          for link in self.chain],
                "failovers": self.failovers, "relayed_steps": self.relayed_steps, "ring_steps": self.ring_steps}
