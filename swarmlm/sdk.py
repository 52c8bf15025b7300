"""The client SDK: generate through a swarm as easily as locally.

    import swarmlm
    with swarmlm.RemoteModel.connect(["/ip4/…/p2p/…"], model="smollm2-135m-instruct") as model:
        print(model.generate("What is the capital of France?").text)
        with model.inference_session(max_length=512) as chat:   # node caches persist across turns
            chat.generate([{"role": "user", "content": "Hi!"}])

The client holds the head shard (embeddings, final norm, LM head) and the tokenizer; nodes hold
the blocks. Only nodes announcing the same manifest root as the local store are used.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence


from ledger import canonical
from ledger.entries import ReceiptEntry
from ledger.keys import Identity
from ledger.receipts import make_receipt
from ledger.store import Store
from routing.chain import RemoteRunner, SwarmView
from routing.client import SpanSession, SwarmClient
from routing.errors import NoRouteError
from routing.planner import plan_route
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.generation import BlockRunner, GenerativeModel
from shards.store import ShardStore


class RemoteModel(GenerativeModel):
    def __init__(self, store: ShardStore, client: SwarmClient, view: SwarmView, device: str,
                 ledger: Store | None) -> None:
        super().__init__(store.load_head(device), store.tokenizer() if store.manifest.tokenizer else None,
                         store.config)
        self.store, self.client, self.view, self.ledger = store, client, view, ledger

    @classmethod
    def connect(cls, initial_peers: Sequence[str], model: str | Path = DEFAULT_MODEL, *,
                identity: str | Path | Identity | None = None, ledger: str | Path | None = None,
                device: str = "cpu", request_timeout: float = 60.0) -> "RemoteModel":
        """Join the swarm, check it serves this model's root, and load the head shard locally.

        `identity`: the client's key (a path is created on first use; default: a fresh key per
        connection). `ledger`: a file where the client logs the receipts it signs.
        """
        store = ShardStore(resolve_model(model))
        ident = identity if isinstance(identity, Identity) or identity is None else Identity.load_or_create(identity)
        client = SwarmClient(initial_peers, ident, request_timeout)
        try:
            view = SwarmView(client, store.root, store.manifest.num_blocks)
            client.run(view.refresh(force=True))
            if not view.records:
                raise NoRouteError(f"no node in the swarm announces model root {store.root[:16]}… "
                                   f"({store.manifest.name or store.path}); nodes and client must use the same "
                                   "packed model")
            plan_route(view.records.values(), 0, store.manifest.num_blocks, rtt=view.rtt, banned=view.bans)
            log = Store(ledger, client.identity) if ledger is not None else None
            return cls(store, client, view, device, log)
        except BaseException:
            client.close()
            raise

    @property
    def root(self) -> str:
        return self.store.root

    def new_runner(self, max_length: int) -> BlockRunner:
        return RemoteRunner(self.view, max_length, self.config.hidden_size, make_receipt=self._receipt)

    def run_details(self, runner: BlockRunner) -> dict[str, Any]:
        assert isinstance(runner, RemoteRunner)
        return {"chain": [{"peer_id": s.peer, "blocks": [s.hop.start, s.hop.end], "tokens": s.tokens}
                          for s in runner.closed_spans], "failovers": runner.failovers}

    def _receipt(self, span: SpanSession) -> bytes:
        """Sign what this span served; keep a copy in the client's own ledger when it has one."""
        receipt = make_receipt(self.client.identity, session=span.session_id, node=span.peer,
                               manifest_root=bytes.fromhex(self.root), blocks=(span.hop.start, span.hop.end),
                               tokens=span.tokens, outputs_digest=span.outputs_digest, time_ns=time.time_ns())
        if self.ledger is not None:
            self.ledger.append(ReceiptEntry(receipt=receipt, time_ns=time.time_ns()))
        return canonical.pack(receipt.to_wire())

    def close(self) -> None:
        try:
            if self.ledger is not None:
                self.ledger.close()
        finally:
            self.client.close()

    def __enter__(self) -> "RemoteModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RemoteModel"]
