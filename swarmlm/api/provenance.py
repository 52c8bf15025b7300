"""Which nodes computed an answer: the model root, the chain of (peer, blocks) and the session id.

Every node logs a signed `serve` entry under the session id when the session closes (with the
gateway's signed receipt), so these facts are enough to find the answer in each node's ledger.
The same facts go in the `swarmlm` field of every response body and in `X-SwarmLM-*` headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarmlm.sdk import Link, ServedBy

HEADER_ROOT = "X-SwarmLM-Model-Root"
HEADER_SESSION = "X-SwarmLM-Session"
HEADER_CHAIN = "X-SwarmLM-Chain"
HEADER_CLIENT = "X-SwarmLM-Client"


@dataclass(frozen=True)
class Provenance:
    model_root: str
    session_id: str
    client_peer_id: str
    chain: tuple[Link, ...]
    failovers: int
    ring_steps: int  # steps whose token the chain's last node sampled (`--ring`), the gateway checking each

    @classmethod
    def of(cls, served: ServedBy, root: str, client_peer_id: str) -> "Provenance":
        """What the SDK reports of a session: the chain serving now, or the receipted one once it closed."""
        return cls(root, served.session_id, client_peer_id, served.chain, served.failovers, served.ring_steps)

    def to_json(self) -> dict[str, Any]:
        return {"model_root": self.model_root, "session_id": self.session_id, "client_peer_id": self.client_peer_id,
                "chain": [{"peer_id": link.peer_id, "blocks": [link.start, link.end], "tokens": link.tokens}
                          for link in self.chain],
                "failovers": self.failovers, "ring_steps": self.ring_steps}

    def headers(self) -> dict[str, str]:
        """The chain as `PEER=A:B` pairs (half-open block ranges, as `--blocks` spells them)."""
        return {HEADER_ROOT: self.model_root, HEADER_SESSION: self.session_id, HEADER_CLIENT: self.client_peer_id,
                HEADER_CHAIN: ", ".join(f"{link.peer_id}={link.start}:{link.end}" for link in self.chain)}
