"""The node daemon's lifecycle: join the DHT, choose and load blocks, serve, announce, rebalance, leave.

One asyncio loop runs everything but tensor compute (the serving compute thread) and disk reads
(the default executor). SIGTERM drains: new sessions are refused, live ones get `drain_grace`
seconds to finish, the node announces `offline`, flushes its ledger and exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import functools
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from hivemind.dht import DHT
import torch

from ledger.entries import Entry, LoadEntry, ServeEntry
from ledger.errors import LedgerError
from ledger.keys import Identity
from ledger.receipts import Receipt, open_receipt
from ledger.store import Store
from routing import dht as dht_io
from routing import protocol, untrusted, wire
from routing import reachability as reach
from routing import relay_stats
from routing.client import PeerLink
from routing.records import ServerRecord, SignedRecordValidator
from shards.blocks import BlockStack
from shards.catalog import resolve_model
from shards.derive import derived_store
from shards.manifest import Quantization
from shards.memory import block_bytes, dequantize_workspace_bytes, kv_bytes_per_token
from shards.paths import swarmlm_home
from shards.store import ShardStore, parse_dtype

from . import status
from .config import NodeConfig
from .errors import NodeError
from .freshness import LOAD_CHECK_PERIOD, load_moved
from .handlers import Handlers
from .inference import Inference
from .ledger_service import LedgerService
from .memory import memory_budget, pool_tokens
from .metrics import NodeMetrics, NodeState
from .neighbours import Neighbours, neighbour_blocks
from .push import PushLinks, PushReceiver
from .ring import RingHead, head_bytes
from .reachable import REACHABILITY_PERIOD, RELAY_WAIT, Reachable
from .selection import (blocks_for_budget, best_start, claim_holds, claim_wait, cooled_down, coverage, move_chance,
                        rebalance_delay, reserve_tokens, should_move)
from .serving import Serving
from .sessions import NodeSession, session_key
from .throughput import batch_size, cached_throughput
from .uplink import output_bytes, through_uplink
from .witnessing import CHECKPOINT_KEY, Witness

log = logging.getLogger(__name__)
IDLE_CHECK_PERIOD = 5.0
RECORD_LIFETIME = 3  # announce periods a record lives: one late or lost announcement leaves no gap


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self._identity_lock = _lock_identity(config.identity)
        self.identity = Identity.load_or_create(config.identity)
        self.peer_id = self.identity.peer_id
        self.store = ShardStore(resolve_model(config.model))
        if config.quant is not None:
            self.store = derived_store(self.store, Quantization.of(config.quant))
        m = self.store.manifest
        self.quantization = m.quantization
        self.root = m.base_root or self.store.root  # the model clients ask for (a derived store's base)
        self.weights_root = self.store.root  # what this node computes with (its attestations say so)
        self.num_blocks = m.num_blocks
        self.dtype = parse_dtype(config.dtype)
        self.rings = config.ring == "on"  # holds the head to close rings (`--ring auto`: decided at start)
        self.dht: DHT | None = None
        self.serving: Serving | None = None
        self.ledger: Store | None = None
        self.witness: Witness | None = None
        self.reachable: Reachable | None = None
        self._relay_metrics_port: int | None = None  # p2pd's own metrics endpoint on localhost
        self.metrics = NodeMetrics()
        self.state = "joining"
        self.throughput = 0.0
        self.batch: tuple[int, float] = (1, 0.0)  # (sessions, their tokens/s together) measured; (1, 0.0): none
        self._claim: int | None = None  # the start of a move announced but not yet made
        self._moved_at: float | None = None  # time.monotonic() of the last move
        self._dht_peers = 0
        self._shown_sessions: int | None = None  # active sessions in the record last stored
        self._maddrs: list[str] = []
        self._status_server: asyncio.Server | None = None  # `node status` on this machine asks here

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then leave cleanly."""
        try:
            await self._start()
            await self._serve(stop)
        finally:
            await self._shutdown()

    # ---- start -----------------------------------------------------------------------------------

    async def _start(self) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        self.ledger = None if ledger_disabled(c) else Store(c.ledger, self.identity)
        self.dht = await loop.run_in_executor(None, self._start_dht)
        p2p = await self.dht.replicate_p2p()
        self._maddrs = [str(m) for m in self.dht.get_visible_maddrs()]
        if c.ring == "auto":
            self.rings = self._rings_alone()
        start, end = await self._choose_span()
        cache_tokens = self._pool_tokens(end - start)  # before loading: the budget is measured on free memory
        stack = await self._load_span(start, end, cache_tokens)
        self.serving = s = Serving(c, self.root, stack, self.identity, self.metrics, self._log_session,
                                   self._info_extra, self._can_record, self.weights_root, self.quantization,
                                   cache_tokens=cache_tokens)
        if self.rings:
            head = await loop.run_in_executor(None, self.store.load_head, c.device, self.dtype)
            s.ring_head = RingHead(head, torch.device(c.device), self.dtype)
        await s.start()
        link = PeerLink(p2p, request_timeout=30)
        self.pushes = PushLinks(link, self._push_refused)
        self.neighbours = Neighbours(self.pushes, self.peer_id)
        self.reachable = Reachable(p2p, link, _peer_ids(c.initial_peers), c.reachability)
        inference = Inference(s, self.pushes)
        receiver = PushReceiver(s, inference.step)
        self.pushes.to_self(self.peer_id, functools.partial(receiver.from_self, self.peer_id,
                                                            refused=self._push_refused))
        rpc = Handlers(s)
        handlers = [(protocol.INFO, rpc.info), (protocol.FORWARD, rpc.forward),
                    (protocol.INFERENCE, inference.handle), (protocol.PUSH, receiver.handle),
                    (protocol.DIALBACK, rpc.dialback)]
        if self.ledger is not None:
            handlers.append((protocol.LEDGER, LedgerService(self.ledger, s).handle))
            self.witness = Witness(link, self.ledger, self.peer_id)
        for name, handler in handlers:
            await p2p.add_binary_stream_handler(name, handler)
        if c.metrics_port is not None:
            self.metrics.set_state_source(self._metrics_state)
            port = self.metrics.start_http(c.metrics_host, c.metrics_port)
            print(f"metrics http://{c.metrics_host}:{port}/metrics", flush=True)
        if c.relay_service:
            log.info("relay service (while reachable): %s", reach.RelayLimits())
        await self.reachable.check(relay_wait=RELAY_WAIT)
        self._maddrs = self.reachable.maddrs
        try:  # before anyone reads our record: our predecessors' first pushes then find a direct connection
            await self.reachable.meet_predecessors((await self._records()).values(), self.peer_id, start)
        except Exception as e:  # the DHT is best-effort; the next announcement tries again
            log.info("could not read the swarm to meet the nodes that push to us: %s", e or type(e).__name__)
        self.state = "online"
        await self._announce()
        self._status_server = await status.serve_local(s.info)
        self._write_runtime_file()
        for maddr in self._maddrs:
            print(f"maddr {maddr}", flush=True)
        print(f"ready {self.peer_id} blocks {start}:{end} root {self.root}", flush=True)

    def _write_runtime_file(self) -> None:
        """STATE_DIR/node.json tells `swarmlm node status` (same machine) where this node listens."""
        path = runtime_file(self.config.state_dir)
        port = self._status_server.sockets[0].getsockname()[1] if self._status_server else None
        path.write_text(json.dumps({"peer_id": self.peer_id, "maddrs": self._maddrs, "pid": os.getpid(),
                                    "started": time.time(), "status_port": port}))

    def _start_dht(self) -> DHT:
        c = self.config
        flags = reach.RelayLimits().p2pd_flags(c.relay_service)
        if c.relay_service and c.metrics_port is not None:  # relayed bytes, for our metrics
            self._relay_metrics_port = relay_stats.free_local_port()
            flags.update(relay_stats.p2pd_flags(self._relay_metrics_port))
        return dht_io.SwarmDHT(
            initial_peers=c.initial_peers or None, start=True, client_mode=False,
            host_maddrs=[f"/ip4/{c.host}/tcp/{c.port}"], identity_path=str(c.identity),
            check_if_identity_free=False,  # hivemind's check parses only RSA keys; we hold a lock instead
            record_validators=[SignedRecordValidator(self.identity.seed)],
            trusted_relays=c.initial_peers or None, p2pd_flags=flags, **reach.p2p_options(c.reachability))

    async def _choose_span(self) -> tuple[int, int]:
        """The configured A:B, or with `auto` the weakest-covered window of the size our memory holds."""
        span = self.config.block_range
        if span is not None:
            if span[1] > self.num_blocks:
                raise NodeError(f"--blocks {span[0]}:{span[1]} is outside the model's 0:{self.num_blocks}")
            return span
        length = self.config.num_blocks or self._blocks_that_fit()
        try:
            records = await self._records()
        except dht_io.DHTTimeout:  # a loaded swarm (or machine) reads slowly: once more, patiently, not die
            log.info("auto: the swarm's coverage did not come within %.0f s; reading it again", dht_io.DHT_TIMEOUT)
            records = await self._records(dht_io.PATIENCE * dht_io.DHT_TIMEOUT)
        start = best_start(coverage(records.values(), self.num_blocks), length)
        log.info("auto: serving blocks %d:%d, where the swarm is weakest", start, start + min(length, self.num_blocks))
        return start, start + min(length, self.num_blocks)

    @functools.cached_property
    def _budget(self) -> int:
        """The memory budget, measured once, before any block is loaded (node/memory.py)."""
        return memory_budget(self.config)

    def _overhead_bytes(self, head: bool | None = None) -> int:
        """What the budget holds beside blocks and cache: the dequantization workspace, and the head a
        ring node holds to close a ring (`head`: whether to count it; default: whether this node does)."""
        m = self.store.manifest
        workspace = dequantize_workspace_bytes(m, self.dtype)
        if self.rings if head is None else head:
            workspace += head_bytes(m.config.vocab_size, m.config.hidden_size, self.dtype)
        return workspace

    def _rings_alone(self) -> bool:
        """`--ring auto`: hold the head only where this node serves every block, the head counted in its
        memory; it then closes rings alone. Elsewhere the head would take memory from blocks, and the
        swarm loses more than rings win (README, "Rings at scale")."""
        span = self.config.block_range
        if span is not None:
            whole = span == (0, self.num_blocks)
        else:
            whole = (self.config.num_blocks or self._blocks_that_fit(head=True)) >= self.num_blocks
        log.info("ring auto: %s", "this node serves every block, so it holds the head and closes rings alone"
                 if whole else "off, as this node does not serve every block with the head beside them")
        return whole

    def _blocks_that_fit(self, head: bool | None = None) -> int:
        """Blocks that fit the memory budget, counted in their real bytes (dtype or quantization) plus
        their share of the KV cache and the dequantization workspace (and the head: `_overhead_bytes`);
        reported at start."""
        c, m = self.config, self.store.manifest
        block, per_token = block_bytes(m, self.dtype), kv_bytes_per_token(m.config, self.dtype)
        reserve = reserve_tokens(c.cache_tokens, c.grow_cache, block, per_token)
        cache = reserve * per_token
        workspace = self._overhead_bytes(head)
        fit = blocks_for_budget(self._budget - workspace, block, cache, self.num_blocks)
        scheme = f"{self.quantization.scheme}/g{self.quantization.group_size}" if self.quantization else c.dtype
        log.info("memory: a block takes %.1f MiB (%s), its KV cache %.1f MiB (%d tokens), dequantizing %.1f MiB; "
                 "a budget of %.0f MiB holds %d blocks", block / 2**20, scheme, cache / 2**20, reserve,
                 workspace / 2**20, self._budget / 2**20, fit)
        return fit

    def _pool_tokens(self, blocks: int) -> int:
        """The KV-cache pool for a span of `blocks` blocks, for the node's life: a move keeps its length,
        so the budget splits as it did (node/serving.py keeps the pool itself across moves); reported."""
        c, m = self.config, self.store.manifest
        if not c.grow_cache:
            return c.cache_tokens
        per_token = kv_bytes_per_token(m.config, self.dtype)
        tokens = pool_tokens(c, self._budget - self._overhead_bytes(), block_bytes(m, self.dtype), per_token, blocks)
        log.info("cache: --grow-cache gives the pool %d tokens (%.0f MiB over %d blocks; --cache-tokens %d, "
                 "a budget of %.0f MiB)", tokens, tokens * per_token * blocks / 2**20, blocks, c.cache_tokens,
                 self._budget / 2**20)
        return tokens

    async def _load_span(self, start: int, end: int, cache_tokens: int) -> BlockStack:
        c = self.config
        loop = asyncio.get_running_loop()
        q = self.quantization
        log.info("loading blocks %d:%d of %s (%s, %s%s)", start, end, self.weights_root[:16], c.device, c.dtype,
                 f", {q.scheme} of {self.root[:16]}" if q else "")
        stack = await loop.run_in_executor(None, self.store.load_blocks, start, end, c.device, self.dtype)
        self._log(LoadEntry(manifest_root=bytes.fromhex(self.weights_root), blocks=(start, end),
                            shard_digests=tuple(map(bytes.fromhex, self.store.manifest.block_digests(start, end))),
                            device=c.device, dtype=c.dtype, time_ns=time.time_ns(),
                            base_root=bytes.fromhex(self.root) if q else None, scheme=q.scheme if q else None))
        self.throughput, self.batch = await loop.run_in_executor(None, self._throughput, stack, cache_tokens)
        return stack

    def _throughput(self, stack: BlockStack, cache_tokens: int) -> tuple[float, tuple[int, float]]:
        """Tokens/s of one session through the span, and (batch, tokens/s) of a batch stepping together
        (node/throughput.py), each with `--upload-mbps` folded in (node/uplink.py); a configured
        `--throughput` announces no batch."""
        c = self.config
        sent = output_bytes(self.store.manifest.config.hidden_size, torch.finfo(self.dtype).bits // 8)
        if c.throughput != "auto":
            return through_uplink(float(c.throughput), sent, c.upload_mbps), (1, 0.0)
        key = f"{self.weights_root}:{stack.start}:{stack.end}:{c.device}:{c.dtype}:{torch.get_num_threads()}"
        cache_file = swarmlm_home() / "throughput.json"
        single = cached_throughput(cache_file, key, stack)
        batch = batch_size(c.max_batch_tokens if c.batching else 1, cache_tokens)
        batched = cached_throughput(cache_file, key, stack, batch) if batch > 1 else 0.0
        return through_uplink(single, sent, c.upload_mbps), (batch, through_uplink(batched, sent, c.upload_mbps))

    # ---- serve -----------------------------------------------------------------------------------

    async def _serve(self, stop: asyncio.Event) -> None:
        """Periodic work until `stop`: announce, witness peers, expire idle sessions, (auto) rebalance."""
        c = self.config
        jobs = [_Periodic(lambda: c.announce_period, self._measure_and_announce),
                _Periodic(lambda: IDLE_CHECK_PERIOD, self._expire_idle),
                _Periodic(lambda: LOAD_CHECK_PERIOD, self._announce_if_load_moved),
                _Periodic(lambda: REACHABILITY_PERIOD, self._check_reachability)]
        if self.witness is not None:
            jobs.append(_Periodic(lambda: c.witness_period, self._witness))
        if c.block_range is None and c.rebalance_period > 0:
            jobs.append(_Periodic(lambda: rebalance_delay(c.rebalance_period),
                                  lambda: self._rebalance(stop)))
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, min(j.due for j in jobs) - time.monotonic()))
                break
            except asyncio.TimeoutError:
                pass
            for job in jobs:
                if time.monotonic() >= job.due and not stop.is_set():
                    await job.run()

    async def _announce_if_load_moved(self) -> None:
        """Announce before the period when our sessions moved far from what our record shows (freshness.py)."""
        if (self.state == "online" and self.serving is not None and self._shown_sessions is not None
                and load_moved(self._shown_sessions, len(self.serving.sessions))):
            await self._announce()

    async def _check_reachability(self) -> None:
        if self.reachable is not None:
            await self.reachable.check()
            self._maddrs = self.reachable.maddrs

    async def _expire_idle(self) -> None:
        if self.serving is not None:
            await self.serving.expire_idle()

    async def _rebalance(self, stop: asyncio.Event) -> None:
        """Move to a weaker span when it clearly helps: claim the move, let concurrent claims land, go
        only if the claim holds (node/selection.py), after draining live sessions; then load there."""
        assert self.serving is not None
        c = self.config
        if not cooled_down(time.monotonic(), self._moved_at, c.rebalance_period):
            return
        target = await self._claimed_target(stop)
        if target is None:
            return
        length = self.serving.stack.end - self.serving.stack.start
        log.info("rebalance: moving from blocks %d:%d to %d:%d, where the swarm is weakest",
                 self.serving.stack.start, self.serving.stack.end, target, target + length)
        self.state = "draining"
        await self._announce()  # still claiming the target: others count us there while we drain
        await self.serving.drain(c.drain_grace)
        self._claim = None
        self._moved_at = time.monotonic()
        self.state = "joining"  # announced on the new blocks: it supersedes the old ones' records
        await self._announce(dataclasses.replace(self.record(), start=target, end=target + length))
        stack = await self._load_span(target, target + length, self.serving.cache_tokens)
        self.serving.stack = stack
        self.serving.draining = False
        self.state = "online"
        await self._announce()

    async def _claimed_target(self, stop: asyncio.Event) -> int | None:
        """Where to move, once a claim to it held; None (and no claim left announced) to stay."""
        try:
            records = await self._records()
        except Exception as e:
            log.warning("rebalance: cannot read the swarm's coverage: %s", e)
            return None
        me = records[self.peer_id] = self.record()
        target = should_move(records.values(), self.num_blocks, me)
        if target is None or stop.is_set() or random.random() >= move_chance(records.values(), me):
            return None
        self._claim = target
        await self._announce()
        holds = False
        try:
            await asyncio.wait_for(stop.wait(), claim_wait(self.config.announce_period))
        except asyncio.TimeoutError:
            try:
                records = await self._records()
                records[self.peer_id] = me = self.record()
                holds = claim_holds(records.values(), self.num_blocks, me)
            except Exception as e:
                log.warning("rebalance: cannot read the swarm's claims: %s", e)
        if not holds:
            log.info("rebalance: a claim to blocks %d+ yields (a lower peer claims them, or they no longer pay)", target)
            self._claim = None
            await self._announce()
            return None
        return target

    async def _measure_and_announce(self) -> None:
        """Refresh the round trips to our next-block neighbours (for at most half a period, so a dead
        neighbour never delays the announcement past our record's expiry), then announce. Only the
        blocks that name them are read: the one after our span, and (when private) the one before it."""
        try:
            assert self.serving is not None
            budget = self.config.announce_period / 2
            records = await asyncio.wait_for(self._records(blocks=self._neighbour_blocks()), budget)
            await self.neighbours.measure(records.values(), self.serving.stack.end, timeout=budget)
            if self.reachable is not None:
                await self.reachable.meet_predecessors(records.values(), self.peer_id, self.serving.stack.start)
        except Exception as e:  # the DHT and the neighbours are best-effort; announcing is not
            log.info("could not measure the next-block neighbours: %s", e or type(e).__name__)
        if self.reachable is not None:
            await self.reachable.refresh()  # a circuit reserved or lost since the last announcement
            self._maddrs = self.reachable.maddrs
        await self._announce()

    def _neighbour_blocks(self) -> list[int]:
        assert self.serving is not None
        private = self.reachable is not None and self.reachable.state.direct is False
        return neighbour_blocks(self.serving.stack.start, self.serving.stack.end, self.num_blocks, private)

    async def _records(self, timeout: float = dht_io.DHT_TIMEOUT,
                       blocks: list[int] | None = None) -> dict[str, ServerRecord]:
        """The swarm's records (of `blocks` only, when given: dht_io.fetch_records)."""
        assert self.dht is not None
        return await dht_io.fetch_records(self.dht, self.root, self.num_blocks, timeout=timeout, blocks=blocks)

    async def _witness(self) -> None:
        """Check the peers' ledgers; never let a peer's misbehaviour take this node down."""
        if self.witness is None:
            return
        try:
            await self.witness.round((await self._records()).values())
        except Exception as e:
            log.warning("witnessing round failed: %s", e)

    def record(self, checkpoint: str | None = None) -> ServerRecord:
        s = self.serving
        assert s is not None
        state = self.state if self.state != "online" or self._can_record() else "draining"  # no sessions now
        return ServerRecord(peer_id=self.peer_id, state=state, start=s.stack.start, end=s.stack.end,
                            throughput=max(round(self.throughput, 2), 0.01), dtype=wire.dtype_name(s.dtype),
                            device=s.device.type, cache_tokens_left=s.cache_tokens_free,
                            version=wire.PROTOCOL_VERSION, name=self.config.public_name,
                            active_sessions=len(s.sessions), max_step_tokens=self.config.max_step_tokens,
                            max_session_length=s.max_length, maddrs=self._maddrs, rtt_ms=self.neighbours.announced(),
                            extra={CHECKPOINT_KEY: checkpoint} if checkpoint else {},
                            scheme=self.quantization.scheme if self.quantization else "",
                            group_size=self.quantization.group_size if self.quantization else 0,
                            weights_root=self.weights_root if self.quantization else "",
                            ring=s.ring_head is not None, moving_to=self._claim,
                            batch_size=self.batch[0], batch_throughput=round(self.batch[1], 2))

    async def _announce(self, record: ServerRecord | None = None) -> None:
        """Store our record under each served block; the DHT is best-effort, never fatal."""
        if self.dht is None or self.serving is None or not self.dht.is_alive():
            return  # no DHT to tell (its child process died, say, to a signal sent to our whole group)
        try:
            if record is None:
                checkpoint = None
                if self.ledger is not None:
                    _, checkpoint = await asyncio.get_running_loop().run_in_executor(
                        None, self.ledger.latest_checkpoint)
                record = self.record(checkpoint)
            began, lifetime = time.monotonic(), RECORD_LIFETIME * self.config.announce_period
            if not await dht_io.announce(self.dht, self.root, record, lifetime):
                log.warning("DHT announcement was not stored by any peer (is the swarm reachable?)")
            self._shown_sessions = record.active_sessions
            if (took := time.monotonic() - began) > self.config.announce_period:
                log.warning("DHT announcement took %.1fs, longer than the announce period (a slow or stalled DHT "
                            "peer?): a record lives %gs from when it is sent", took, lifetime)
            self._dht_peers = await dht_io.peer_count(self.dht)
        except Exception as e:
            log.warning("DHT announcement failed: %s", e)

    # ---- observability ---------------------------------------------------------------------------

    def _info_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"state": self.state, "name": self.config.public_name,
                                 "reachability": self.reachable.state.describe() if self.reachable else "not known yet",
                                 "throughput": round(self.throughput, 2),
                                 "batch": {"sessions": self.batch[0], "throughput": round(self.batch[1], 2)},
                                 "ledger_size": self.ledger.size() if self.ledger else 0}
        if self.ledger is not None:
            h = self.ledger.health()
            extra["ledger_health"] = {"ok": h.ok, "pending": h.pending, "failures": h.failures,
                                      "unwritten": h.unwritten, "last_error": h.last_error}
        return extra

    def _metrics_state(self) -> NodeState:
        s = self.serving
        state: NodeState = {"dht_peers": self._dht_peers, "root": self.root, "dtype": self.config.dtype}
        if self.reachable is not None:
            state.update(reachability=self.reachable.state.kind, relays=self.reachable.state.relays)
        if self._relay_metrics_port is not None and (relayed := relay_stats.read(self._relay_metrics_port)):
            state["relayed"] = relayed
        if s is not None:
            state.update(active_sessions=len(s.sessions), cache_tokens_used=s.cache_tokens_used,
                         cache_tokens_free=s.cache_tokens_free, blocks_served=(s.stack.start, s.stack.end))
        if self.ledger is not None:
            state["ledger_entries"] = self.ledger.size()
            h = self.ledger.health()
            state.update(ledger_ok=int(h.ok), ledger_pending=h.pending, ledger_commit_failures=h.failures,
                         ledger_unwritten=h.unwritten)
            try:
                state["ledger_checkpoint_size"] = self.ledger.latest_checkpoint()[0]
            except LedgerError:
                pass
        return state

    # ---- ledger ----------------------------------------------------------------------------------

    def _log(self, entry: Entry) -> None:
        """Queue an entry for the ledger's writer thread; the serving path never waits for the disk."""
        if self.ledger is not None:
            self.ledger.append(entry)

    def _can_record(self) -> bool:
        """New sessions only while the ledger commits: served ⇒ logged (or loudly failed)."""
        return self.ledger is None or self.ledger.health().ok

    def _log_session(self, session: NodeSession, receipt_bytes: bytes | None) -> None:
        """Append the session's `serve` entry, whatever its receipt holds: a receipt that does not check
        out is dropped (and counted), never a reason to skip the entry. A session that computed no
        step served nothing: it is counted, not logged, so opening and closing empty sessions cannot
        grow the append-only ledger (it grows with work, not with requests)."""
        if session.steps == 0:
            self.metrics.session_empty()
            return
        if self.ledger is None:
            return
        receipt = self._valid_receipt(session, receipt_bytes)
        self._log(ServeEntry(
            session=session.session_id, client=session.client, manifest_root=bytes.fromhex(self.weights_root),
            blocks=(session.stack.start, session.stack.end), tokens=session.tokens, steps=session.steps,
            start_ns=session.opened_ns, end_ns=time.time_ns(), steps_digest=session.steps_digest,
            receipt=receipt, time_ns=time.time_ns(), accepted_tokens=session.accepted))

    def _valid_receipt(self, session: NodeSession, data: bytes | None) -> Receipt | None:
        if data is None:
            return None
        try:
            receipt = open_receipt(data)
        except Exception as e:  # attacker bytes (ReceiptError); whatever else they break, the session is logged
            untrusted.dropped("receipt", f"from {session.client}: {type(e).__name__}: {e}")
            log.warning("session %s: invalid receipt from %s (%s); logging it unreceipted",
                        session.session_id, session.client[-8:], e)
            return None
        expected = (self.peer_id, session.client, session.session_id, bytes.fromhex(self.weights_root),
                    (session.stack.start, session.stack.end), session.tokens, session.outputs_digest,
                    session.accepted if receipt.accepted_tokens is not None else None)
        got = (receipt.node, receipt.client, receipt.session, receipt.manifest_root, tuple(receipt.blocks),
               receipt.tokens, receipt.outputs_digest, receipt.accepted_tokens)
        if got != expected:
            untrusted.dropped("receipt", f"from {session.client}: does not match the session served")
            log.warning("session %s: receipt from %s does not match what was served; logging it unreceipted",
                        session.session_id, session.client[-8:])
            return None
        return receipt

    async def _push_refused(self, peer: str, frame: dict[str, Any]) -> None:
        """`peer` refused one of our pushes: tell that session's client, who relays instead. Only the
        session's own successor can say so (any peer we push to could name other sessions)."""
        s = self.serving
        error = protocol.Error.lenient(frame)
        if s is None or error.client is None or error.session is None:
            return
        session = s.sessions.get(session_key(error.client, error.session))
        if session is not None and session.next_peer == peer:
            try:
                await session.send(protocol.PushFailed(session.session_id, error.code, error.message,
                                                           error.start).to_wire())
            except (ConnectionError, RuntimeError):
                pass

    # ---- leave -----------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Drain, leave and flush the ledger — even when the DHT child died first (systemd signals the
        whole group): every DHT call has a timeout and is best-effort."""
        if self.serving is not None:
            self.state = "draining"
            if self.serving.sessions:  # with none, the offline record says it all: one DHT store, not two
                await self._announce()
            log.info("draining: %d live session(s) get up to %.0fs to finish", len(self.serving.sessions),
                     self.config.drain_grace)
            await self.serving.drain(self.config.drain_grace)
            self.state = "offline"
            await self._announce()
            await self.pushes.close()
            await self.serving.stop()
        self.metrics.stop_http()
        if self._status_server is not None:
            self._status_server.close()
        if self.ledger is not None:
            self.ledger.close()
        if self.dht is not None:
            self.dht.shutdown()
        runtime_file(self.config.state_dir).unlink(missing_ok=True)
        log.info("node %s stopped", self.peer_id)


def _peer_ids(maddrs: list[str]) -> list[str]:
    """The peer IDs at the end of multiaddrs (`…/p2p/ID`), in order."""
    return [m.rsplit("/p2p/", 1)[1] for m in maddrs if "/p2p/" in m]


class _Periodic:
    """A job of the serve loop: `action` every `period()` seconds (period re-drawn each time)."""

    def __init__(self, period: Callable[[], float], action: Callable[[], Awaitable[Any]]) -> None:
        self.period, self.action = period, action
        self.due = time.monotonic() + period()

    async def run(self) -> None:
        """The next run is due a period after this one began, not after it ended: a slow action (a
        measurement on a loaded machine) must not stretch the gap between announcements."""
        self.due = time.monotonic() + self.period()
        await self.action()


def runtime_file(state_dir: Path) -> Path:
    return state_dir / "node.json"


def ledger_disabled(config: NodeConfig) -> bool:
    """`--ledger off` runs without a ledger: only for measuring what the ledger costs."""
    return str(config.ledger) == "off"


def _lock_identity(path: Path) -> int:
    """Hold an exclusive lock beside the identity: two nodes with one peer ID would confuse the swarm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NodeError(f"the identity {path} is in use by another node on this machine; "
                        "give each node its own --identity or --state-dir") from None
    return fd
