"""The client SDK: generate through a swarm as easily as locally.

    import swarmlm
    with swarmlm.RemoteModel.connect(["/ip4/…/p2p/…"], model="smollm2-135m-instruct") as model:
        print(model.generate("What is the capital of France?").text)
        with model.inference_session(max_length=512) as chat:   # keeps the chat and the nodes' caches
            chat.generate("Hi! My name is Ana.")
            chat.generate("What's my name?")                     # I'm Ana, …
        model.choices("Name a colour.", 3, temperature=1.0, seed=1, logprobs=2)  # 3 answers, one prefill
        model.generate(messages, tools=[...], tool_choice="required").tool_calls  # OpenAI's function tools

    async with model.inference_session(max_length=512) as chat:     # asyncio: awaits the swarm on the loop
        async for event in chat.astream("Hi!"):                      # torch work goes to a worker thread
            print(event.text, end="")
        answer = await chat.agenerate("And in French?")
        answer.served.session_id, answer.served.chain, answer.served.failovers, answer.finish_reason

Sampling (temperature, top_p, top_k, min_p, penalties, seed, logprobs, structured output and tool
calls' grammars) happens here, at the head:
see shards.generation.Session.stream. The client holds the head shard (embeddings, final norm, LM head) and the tokenizer; nodes hold
the blocks. Only nodes announcing the same manifest root as the local store are used.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterable, Sequence


from ledger import canonical
from ledger.entries import EvidenceEntry, ReceiptEntry
from ledger.keys import Identity
from ledger.receipts import make_receipt
from ledger.store import Store
from routing import dht as dht_io
from routing.chain import DEFAULT_DEADLINE, RemoteRunner
from routing.client import SwarmClient
from routing.errors import NoRouteError
from routing.evidence import Evidence
from routing.planner import plan_route
from routing.span import SpanSession
from routing.tasks import background
from routing.verification import Referee, Verifier
from routing.view import Coverage, SwarmView
from routing.weights import DEFAULT_ACCEPTED, AcceptedWeights
from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.errors import ShardsError
from shards.generation import BlockRunner, GenerativeModel
from shards.paths import swarmlm_home
from shards.served import Link, ServedBy
from shards.store import ShardStore

from .client_parts import head_and_tokenizer


LEDGER_PAYLOAD_LIMIT = 900_000  # bytes; larger evidence goes to the ledger as a summary with its digest
DEFAULT_SPOT_CHECK_RATE = 0.005  # share of span steps re-run on a second node: under 5% of tokens/s (bench_verify)
EVIDENCE_TTL = 7 * 24 * 3600.0


class RemoteModel(GenerativeModel):
    def __init__(self, store: ShardStore, client: SwarmClient, view: SwarmView, device: str,
                 ledger: Store | None, verifier_options: dict[str, Any] | None, evidence_dir: Path,
                 push: bool = True, recover_timeout: float | None = None, ring: bool = True) -> None:
        super().__init__(*head_and_tokenizer(store, device), store.config)
        self.store, self.client, self.view, self.ledger, self.push = store, client, view, ledger, push
        self.evidence_dir, self.recover_timeout, self.ring = evidence_dir, recover_timeout, ring
        self.evidence: list[tuple[Evidence, Path]] = []
        self.verifier = None if verifier_options is None else Verifier(
            client, view, referee=view.referee, identity=client.identity, on_evidence=self._on_evidence,
            **verifier_options)

    @classmethod
    def connect(cls, initial_peers: Sequence[str], model: str | Path = DEFAULT_MODEL, *,
                identity: str | Path | Identity | None = None, ledger: str | Path | None = None,
                device: str = "cpu", request_timeout: float = 60.0, verify: bool = True,
                spot_check_rate: float = DEFAULT_SPOT_CHECK_RATE, evidence_dir: str | Path | None = None,
                seed: int | None = None, push: bool = True,
                accept_quantized: Iterable[str] = DEFAULT_ACCEPTED,
                recover_timeout: float | None = None, ring: bool = True) -> "RemoteModel":
        """Join the swarm, check it serves this model's root, and load the head shard locally.

        `identity`: the client's key (a path is created on first use; default: a fresh key per
        connection). `ledger`: a file where the client logs the receipts (and evidence) it signs.
        `verify`: check every step's signed attestation and spot-check `spot_check_rate` of span
        steps on a second node; a node caught computing wrong is banned and evidence is written to
        `evidence_dir` (default $SWARMLM_HOME/client/evidence), the ledger and the DHT.
        `push`: nodes push each step's output straight to the next node (one trip through the
        chain instead of a round trip per node); False relays every hop through the client.
        `accept_quantized`: quantization schemes of nodes to route through besides the model's own
        weights (default int8; add "nf4"/"q4_1" for 4-bit, () for none): the client derives each
        scheme's store from its own shards and admits only nodes serving exactly that root.
        `ring`: where the chain's first and last nodes hold the head (`--ring` nodes), the last one samples
        each next token (greedy, or this client's seeded sampler) and sends it straight to the first; the
        client checks every token against its own head off the critical path and rolls back on a
        mismatch (routing/ring.py). Needs `push`; steps with a grammar or penalties go as pushed. With
        `speculative=k` in a call, the last node also drafts up to k tokens by prompt lookup and judges them
        by the exact acceptance rule, which the client re-applies (its drafts are then the ring's: where no
        ring can close, such a call drafts by prompt lookup itself). On by default: it changes nothing
        unless nodes run `--ring`, and around a ring a token skips the client's two legs (1.7-1.8x the
        tokens/s of pushed at 50 ms in the WAN lab); False for a client sharing the nodes' cores (0.9x on
        loopback, where its check competes with them).
        `recover_timeout`: seconds a token may wait for a chain (at a session's start or after a node
        failed), polling for nodes that rejoin, before it raises; None (default): fail over for up to
        300 s, but raise NoRouteError at once when no node could cover the model.
        """
        if not 0 <= spot_check_rate <= 1:
            raise ShardsError(f"spot_check_rate must be in [0, 1], got {spot_check_rate}")
        store = ShardStore(resolve_model(model))
        ident = identity if isinstance(identity, Identity) or identity is None else Identity.load_or_create(identity)
        client = SwarmClient(initial_peers, ident, request_timeout)
        try:
            weights = AcceptedWeights(store, accept_quantized)
            view = SwarmView(client, store.root, store.manifest.num_blocks,
                             referee=Referee(weights.stores) if verify else None, weights=weights)
            client.run(view.refresh(force=True))
            if not view.records:
                raise NoRouteError(f"no node in the swarm announces model root {store.root[:16]}… "
                                   f"({store.manifest.name or store.path}); nodes and client must use the same "
                                   "packed model")
            plan_route(view.records.values(), 0, store.manifest.num_blocks, rtt=view.rtt, banned=view.bans)
            log = Store(ledger, client.identity) if ledger is not None else None
            options = {"rate": spot_check_rate, "seed": seed} if verify else None
            return cls(store, client, view, device, log, options,
                       Path(evidence_dir) if evidence_dir else swarmlm_home() / "client" / "evidence", push,
                       recover_timeout, ring)
        except BaseException:
            client.close()
            raise

    @property
    def root(self) -> str:
        return self.store.root

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (on a thread of its own) where this client awaits the swarm: asyncio code running
        on it (a server, say) awaits `astream`/`agenerate` with no thread hop for the network."""
        return self.client.loop

    async def coverage(self, max_length: int = 1, refresh: bool = False) -> Coverage:
        """How much of the model the swarm covers now, as this client sees it; `refresh` re-reads the
        swarm in the background when the view is stale (this answer does not wait for it)."""
        async def read() -> Coverage:
            if refresh:
                self.view.refresh_soon()
            return self.view.coverage(max_length)

        return await self.client.on_loop(read())

    def new_runner(self, max_length: int) -> BlockRunner:
        return RemoteRunner(self.view, max_length, self.config.hidden_size, make_receipt=self._receipt,
                            verifier=self.verifier, push=self.push,
                            deadline=self.recover_timeout or DEFAULT_DEADLINE,
                            await_coverage=self.recover_timeout is not None,
                            ring_head=self.head if self.ring else None)

    async def _on_evidence(self, evidence: Evidence) -> None:
        """Keep the proof three ways: a file anyone can check offline, our ledger, and the DHT."""
        document = evidence.to_bytes()
        loop = asyncio.get_running_loop()
        path = await loop.run_in_executor(None, self._write_evidence, evidence, document)
        self.evidence.append((evidence, path))
        if self.ledger is not None:
            payload = evidence.summary() if len(document) > LEDGER_PAYLOAD_LIMIT else canonical.unpack(
                document, max_size=len(document))
            self.ledger.append(EvidenceEntry(payload=payload, time_ns=time.time_ns()))
        background(dht_io.publish_evidence(self.client.dht, self.root, self.client.peer_id, document, EVIDENCE_TTL),
                   "publishing evidence")

    def _write_evidence(self, evidence: Evidence, document: bytes) -> Path:
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        path = self.evidence_dir / f"{evidence.time_ns}-{evidence.dishonest[-10:]}.evidence"
        path.write_bytes(document)
        return path

    def _receipt(self, span: SpanSession) -> bytes:
        """Sign what this span served; keep a copy in the client's own ledger when it has one."""
        receipt = make_receipt(self.client.identity, session=span.session_id, node=span.peer,
                               manifest_root=bytes.fromhex(span.weights_root), blocks=(span.hop.start, span.hop.end),
                               tokens=span.tokens, outputs_digest=span.outputs_digest, time_ns=time.time_ns(),
                               accepted_tokens=span.accepted)
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


__all__ = ["Coverage", "Link", "RemoteModel", "ServedBy"]
