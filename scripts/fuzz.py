"""Structure-aware fuzzer: a real node's every handler, every DHT value type, every untrusted-input parser.

Each case starts from a valid frame or value built by the real code and mutates it structurally
(mutate.py; targets in fuzz_targets.py):
  info, forward, inference (open, step, route, close), push, ledger   frames over real streams to
                                         a real node (started here: bootstrap + one node on 0:2,
                                         and one on the other blocks for the gateway's chains)
  gateway    raw HTTP requests to a real `swarmlm api` gateway over the same swarm (fuzz_http.py):
             mutated, non-JSON, deeply nested and oversized bodies, wrong content types, hostile
             heads, slow and cut-off requests, streams left unread
  dht        server records and evidence indexes and documents, published from fresh identities
             into the real DHT, read back through routing.dht's fetch_records / fetch_evidence and
             Evidence.from_bytes (8 values per case, each counted)
  record, evidence, receipt, entry, checkpoint, grant, attestation     the parsers, in process
A case fails on an `internal` error frame, a reply that is not a frame, a 500 or `server_error`
from the gateway, a node or gateway that dies or stops answering, an error line in their logs,
or any exception but a parser's documented one. Cases are
drawn from `--seed` and their index, so `--replay N` re-runs case N alone.

    python scripts/fuzz.py [--cases 10000] [--seconds 900] [--seed 0] [--concurrency 8] [--json]
    python scripts/fuzz.py --peers MADDR... --node PEER_ID [--gateway URL]   (a running swarm instead)

Prints progress every 5 s and a summary (cases and outcomes per target, failures); exit status 1
on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fuzz_http  # noqa: E402
import fuzz_targets as targets  # noqa: E402
from fuzz_targets import Context, Failure, Probe  # noqa: E402
from mutate import Mutator  # noqa: E402
from node.local_swarm import LocalNode, LocalSwarm  # noqa: E402
from routing import dht as dht_io  # noqa: E402
from routing import wire  # noqa: E402
from routing.errors import RoutingError  # noqa: E402
from routing.evidence import Evidence, EvidenceError  # noqa: E402
from routing.grants import grant  # noqa: E402
from routing.records import ServerRecord, block_key  # noqa: E402
from shards.catalog import DEFAULT_MODEL, resolve_model  # noqa: E402
from shards.store import ShardStore  # noqa: E402
from tests.api.gateway_process import run_gateway  # noqa: E402
from tests.hostile.attacker import Attacker, Sybils, built  # noqa: E402
from tests.swarm.raw import RawSession  # noqa: E402

WEIGHTS = {"info": 6, "forward": 14, "inference": 14, "push": 8, "ledger": 6, "dht": 2, "gateway": 16, "record": 10,
           "evidence": 6, "receipt": 6, "entry": 6, "checkpoint": 6, "grant": 5, "attestation": 5}
# short deadlines, so cut-off requests end soon; requests without max_tokens get 16, not a long answer
GATEWAY_ARGS = ["--head-timeout", "3", "--body-timeout", "3", "--max-concurrency", "4", "--max-queue", "64",
                "--default-max-tokens", "16"]
DHT_VALUES = 8  # values published per dht case
IDLE = 15.0  # seconds a node may stay silent on a stream before the probe gives up waiting
CASE_TIMEOUT = 120.0  # a case taking longer hangs somewhere: a failure
# seconds without a byte before a gateway case that expects an answer fails: a whole (unstreamed)
# answer to a long mutated prompt waits for its turn and its prefill on two busy cores
GATEWAY_IDLE = CASE_TIMEOUT - 10
MAX_FAILURES = 20  # then stop: a broken node fails every case after
LOG_ERRORS = ("Traceback", "internal error", "exception was never retrieved", "Unhandled")


@dataclass
class Tally:
    cases: Counter = field(default_factory=Counter)  # by target
    outcomes: dict[str, Counter] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def add(self, target: str, outcome: str, n: int = 1) -> None:
        self.cases[target] += n
        self.outcomes.setdefault(target, Counter())[outcome] += n

    def note(self, target: str, outcome: str) -> None:
        """An outcome seen within a case (not a case of its own)."""
        self.outcomes.setdefault(target, Counter())[outcome] += 1

    def fail(self, index: int | None, target: str, reason: str) -> None:
        self.failures.append({"case": index, "target": target, "reason": reason[:500]})


class Fuzzer:
    def __init__(self, args: argparse.Namespace, initial_peers: list[str], node_peer: str,
                 node: LocalNode | None, gateway: str | None) -> None:
        self.args, self.node, self.initial_peers = args, node, initial_peers
        self.gateway = gateway  # http://HOST:PORT, or None: no gateway cases
        self.client = Attacker(initial_peers, [node] if node else [])
        self.pusher = Attacker(initial_peers, [node] if node else [])
        self.node_peer, self.tally = node_peer, Tally()
        self.sybils: Sybils | None = None
        self.ctx: Context | None = None
        self.num_blocks = 0
        self._next = 0
        self._push: RawSession | None = None
        self._dht_turn = asyncio.Lock()  # one dht case at a time: a DHT's command pipe takes one writer

    # ---- set-up ------------------------------------------------------------------------------------

    async def setup(self) -> None:
        store = ShardStore(resolve_model(self.args.model))
        if self.node is None:  # a running swarm's node: where it listens is in its record
            records = await dht_io.fetch_records(self.client.link.dht, store.root, store.manifest.num_blocks)
            for who in (self.client, self.pusher):
                who.link.learn(records.values())
        info = (await self.client.link.ping(self.node_peer))[1].raw
        reply = await self.client.exchange(self.node_peer, targets.LEDGER, [wire.pack_frame(
            {"type": "ledger", "v": wire.PROTOCOL_VERSION, "op": "checkpoint"})], frames=1)
        size = reply.frames[0].get("size", 1) if reply.frames else 1
        self.ctx = Context(info["root"], self.node_peer, (info["start"], info["end"]), store.config.hidden_size,
                           self.client.link.identity, self.pusher.peer_id, "", max(1, size))
        self.num_blocks = store.manifest.num_blocks
        await self._open_push_session()

    async def _open_push_session(self) -> None:
        """A session naming the pusher as predecessor, for push cases; reopened whenever it ends.
        What the node sends on it (results of pushed steps, errors) is checked like any reply."""
        ctx = self.ctx
        assert ctx is not None
        ctx.push_session = f"push-{self._next}"
        g = grant(ctx.client, session=ctx.push_session, node=ctx.peer, prev=ctx.pusher, next=None, root=ctx.root,
                  blocks=ctx.span)
        self._push = RawSession(self.client.link, ctx.peer, ctx.root, ctx.push_session, 64, blocks=list(ctx.span),
                                grant=g.to_wire())
        await self._push.open()
        asyncio.ensure_future(self._watch_push(self._push))

    async def _watch_push(self, session: RawSession) -> None:
        assert session.reader is not None
        try:
            while True:
                frame = await wire.read_frame(session.reader)
                outcome = str(frame.get("code") if frame["type"] == "error" else frame["type"])
                self.tally.note("push", f"session: {outcome}")
                if outcome == "internal":
                    self.tally.fail(None, "push", f"internal error on the push session: {frame.get('message')}")
        except (asyncio.IncompleteReadError, ConnectionError, RoutingError):
            pass
        try:
            if self._push is session and not self.done:
                await self._open_push_session()
        except RoutingError as e:  # pushes are refused until the next session opens
            print(f"could not reopen the push session: {e}", file=sys.stderr)

    # ---- cases -------------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._next >= self.args.cases or time.monotonic() > self.deadline

    async def run(self) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + self.args.seconds
        await self.setup()
        if self.args.replay is not None:
            self._next = self.args.cases
            await self.case(self.args.replay)
            return
        monitor = asyncio.ensure_future(self._monitor())
        await asyncio.gather(*(self._worker() for _ in range(self.args.concurrency)))
        monitor.cancel()
        if not await self._node_up():
            self.tally.fail(None, "node", "the node is down after the run")
        if self.gateway and not await self._gateway_up():
            self.tally.fail(None, "gateway", "the gateway is down after the run")
        if self._push is not None:
            self._push.abort()

    async def _worker(self) -> None:
        while not self.done and len(self.tally.failures) < MAX_FAILURES:
            index = self._next
            self._next += 1
            await self.case(index)

    async def case(self, index: int) -> None:
        rng = random.Random(f"{self.args.seed}:{index}")
        weights = {t: w for t, w in WEIGHTS.items() if t != "gateway" or self.gateway}
        target = rng.choices(list(weights), list(weights.values()))[0]
        m = Mutator(rng)
        assert self.ctx is not None
        try:
            if target in targets.STREAMS:
                probe = targets.STREAMS[target](m, self.ctx, index)
                self.tally.add(target, await asyncio.wait_for(self._probe(probe), CASE_TIMEOUT))
            elif target == "gateway":
                self.tally.add(target, await asyncio.wait_for(self._http(fuzz_http.case(m)), CASE_TIMEOUT))
            elif target == "dht":
                async with self._dht_turn:
                    await asyncio.wait_for(self._dht(m), CASE_TIMEOUT)
            else:
                self.tally.add(target, targets.PARSERS[target](m, self.ctx, index))
        except Exception as e:  # Failure, or anything a parser should not have raised
            reason = (str(e) if isinstance(e, Failure) else f"no outcome within {CASE_TIMEOUT:.0f} s"
                      if isinstance(e, asyncio.TimeoutError) else f"{type(e).__name__}: {e}")
            self.tally.add(target, "FAILED")
            self.tally.fail(index, target, reason)
            print(f"FAILED case {index} ({target}): {reason[:300]}", file=sys.stderr, flush=True)

    async def _probe(self, probe: Probe) -> str:
        who = self.pusher if probe.sender == "pusher" else self.client
        exchange = who.exchange(self.node_peer, probe.handler, probe.payloads, hang_up=probe.hang_up, idle=IDLE,
                                frames=probe.frames)
        try:
            reply = await exchange if who is self.client else (await asyncio.wrap_future(who.start(exchange)))[0]
        except RoutingError as e:  # the stream would not open: is the node still there?
            if await self._node_up():
                return "unopened"
            raise Failure(f"the node stopped answering: {e}") from None
        if "internal" in reply.codes:
            raise Failure(f"internal error: {[f.get('message') for f in reply.frames if f.get('code') == 'internal']}")
        if reply.ended == "garbled":
            raise Failure(f"the node sent something that is not a frame after {reply.codes}")
        return ",".join(reply.codes[-3:]) + f" ({reply.ended})"

    async def _http(self, case: fuzz_http.HttpCase) -> str:
        assert self.gateway is not None
        host, port = self.gateway.removeprefix("http://").rsplit(":", 1)
        try:
            return await fuzz_http.exchange(host, int(port), case, GATEWAY_IDLE)
        except OSError as e:  # the connection would not open: is the gateway still there?
            if await self._gateway_up():
                return f"{case.kind}: unopened ({type(e).__name__})"
            raise Failure(f"the gateway stopped answering: {e}") from None

    async def _gateway_up(self) -> bool:
        """Whether the gateway answers GET /health with a status line (of any code)."""
        assert self.gateway is not None
        host, port = self.gateway.removeprefix("http://").rsplit(":", 1)
        for _ in range(3):
            try:
                answer = await fuzz_http.exchange(host, int(port), fuzz_http.HttpCase(
                    "health", [b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"]), 20)
                return answer.startswith("health: ") and answer[-3:].isdigit()
            except (OSError, Failure):
                await asyncio.sleep(1)
        return False

    async def _read_dht(self, root: str) -> tuple[dict[str, ServerRecord], dict[str, tuple[str, bytes]]]:
        """Records and evidence as a client reads them. A read that times out once is asked again with
        a deadline four times as long: on two loaded cores a 15 s DHT read can be slow, while a value
        that hangs hivemind's search (the bug this target once found) times out both times."""
        dht = self.client.link.dht
        for timeout in (dht_io.DHT_TIMEOUT, 4 * dht_io.DHT_TIMEOUT):
            try:
                return (await dht_io.fetch_records(dht, root, self.num_blocks, timeout=timeout),
                        await dht_io.fetch_evidence(dht, root, timeout=timeout))
            except dht_io.DHTTimeout:
                if timeout > dht_io.DHT_TIMEOUT:
                    raise
                self.tally.note("dht", "read slow, retried")
        raise AssertionError("unreachable")

    async def _dht(self, m: Mutator) -> None:
        """Mutated records and evidence from fresh identities, through the real DHT and its readers."""
        assert self.ctx is not None
        if self.sybils is None:
            self.sybils = await asyncio.get_running_loop().run_in_executor(
                None, lambda: Sybils(self.initial_peers, count=DHT_VALUES, ttl=60))
        root, items, documents, kinds, values = self.ctx.root, [], [], {}, {}
        for who in self.sybils.peer_ids:
            kinds[who] = m.rng.choice(["record", "record", "index", "document"])
            if kinds[who] == "record":
                values[who] = value = m.document(targets.RECORD)
                items += [(block_key(root, b), who, value) for b in m.rng.sample(range(self.num_blocks), 2)]
            elif kinds[who] == "index":
                items.append((dht_io.evidence_key(root), who, targets.evidence_index(m)))
            else:
                documents.append((who, m.bytes(targets.EVIDENCE_BYTES)))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.sybils.store, items)
        for who, document in documents:
            await loop.run_in_executor(None, self.sybils.evidence, who, root, document)
        try:
            records, published = await self._read_dht(root)
            for record in records.values():
                targets.check_record(record, self.num_blocks)
        except Failure:
            raise
        except Exception as e:
            raise Failure(f"reading the DHT raised {type(e).__name__}: {e}") from e
        for who, kind in kinds.items():
            if kind == "record":  # kept: read back as this very value (not an earlier case's)
                kept = records.get(who) == ServerRecord.from_value(who, built(values[who]), num_blocks=self.num_blocks)
                self.tally.add("dht", f"record {'kept' if who in records and kept else 'dropped'}")
            elif who not in published:
                self.tally.add("dht", f"{kind} dropped")
            else:
                self.tally.add("dht", f"{kind}: " + targets.parsed(lambda: Evidence.from_bytes(published[who]),
                                                                    EvidenceError))

    # ---- health ------------------------------------------------------------------------------------

    async def _node_up(self) -> bool:
        if self.node is not None and self.node.process is not None and self.node.process.poll() is not None:
            return False
        for _ in range(3):
            try:
                info = (await asyncio.wait_for(self.client.link.ping(self.node_peer), 20))[1].raw
                return info.get("peer_id") == self.node_peer
            except Exception:
                await asyncio.sleep(1)
        return False

    async def _monitor(self) -> None:
        last = 0
        while True:
            await asyncio.sleep(5)
            done, elapsed = sum(self.tally.cases.values()), time.monotonic() - self.started
            print(f"[{elapsed:6.1f}s] {done} cases ({(done - last) / 5:.0f}/s), {len(self.tally.failures)} failed",
                  file=sys.stderr, flush=True)
            last = done
            if not await self._node_up():
                self.tally.fail(None, "node", "the node stopped answering swarmlm.info")
                self._next = self.args.cases

    def close(self) -> None:
        if self.sybils is not None:
            self.sybils.close()
        self.pusher.close()
        self.client.close()


def _log_errors(log: Path | str) -> list[str]:
    """Error lines of a node's or the gateway's log, each traceback as its last line (the exception)."""
    lines = Path(log).read_text(errors="replace").splitlines()
    found = []
    for i, line in enumerate(lines):
        if "Traceback" in line:
            found.append(next((x for x in lines[i + 1:] if x and not x.startswith((" ", "Traceback"))), line))
        elif any(marker in line for marker in LOG_ERRORS):
            found.append(line)
    return found


def summary(tally: Tally, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    return {"cases": sum(tally.cases.values()), "seconds": round(seconds, 1), "seed": args.seed,
            "targets": {t: {"cases": tally.cases[t], "outcomes": dict(tally.outcomes.get(t, Counter()).most_common())}
                        for t in WEIGHTS},
            "failures": tally.failures}


def _text(report: dict[str, Any]) -> str:
    lines = [f"{report['cases']} cases in {report['seconds']} s (seed {report['seed']})"]
    for target, t in report["targets"].items():
        top = list(t["outcomes"].items())
        shown = ", ".join(f"{k}: {v}" for k, v in top[:6]) + (f", … {len(top) - 6} more" if len(top) > 6 else "")
        lines.append(f"  {target:12} {t['cases']:6}  {shown}")
    lines += [f"FAILED case {f['case']} ({f['target']}): {f['reason']}" for f in report["failures"][:20]]
    lines.append(f"{len(report['failures'])} failure(s)" if report["failures"] else "ok: no failures")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000, help="cases to run (default 10000)")
    ap.add_argument("--seconds", type=float, default=900.0, help="stop starting cases after this long (default 900)")
    ap.add_argument("--seed", type=int, default=0, help="what the cases are drawn from (default 0)")
    ap.add_argument("--replay", type=int, default=None, metavar="N", help="run case N of this seed alone")
    ap.add_argument("--concurrency", type=int, default=8, help="cases in flight at once (default 8)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"store folder or catalogued name (default {DEFAULT_MODEL})")
    ap.add_argument("--peers", nargs="+", metavar="MADDR", help="fuzz a running swarm's node (with --node)")
    ap.add_argument("--node", metavar="PEER_ID", help="with --peers: the node to fuzz")
    ap.add_argument("--gateway", metavar="URL", help="with --peers: a running gateway to fuzz (http://HOST:PORT; "
                                                      "default: no gateway cases)")
    ap.add_argument("--state-dir", type=Path, help="where its swarm keeps logs and ledgers (default: a temporary "
                                                   "folder, removed after)")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = ap.parse_args(argv)
    if bool(args.peers) != bool(args.node) or (args.gateway and not args.peers):
        ap.error("--peers and --node go together, and --gateway goes with them")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp, ExitStack() as stack:
        state = args.state_dir or Path(tmp)
        swarm = None if args.peers else LocalSwarm(str(resolve_model(args.model)), state,
                                                   # thousands of opens from one identity: past the open rate limit
                                                   node_args=["--throughput", "5", "--peer-opens-per-minute", "1000000"])
        gateway, gateway_log = args.gateway, None
        try:
            if swarm is not None:
                blocks = ShardStore(resolve_model(args.model)).manifest.num_blocks
                swarm.start_spans([(0, 2), (2, blocks)])  # the second node completes the gateway's chains
                gw = stack.enter_context(run_gateway(swarm.initial_peers, state / "gateway", args=GATEWAY_ARGS))
                gateway, gateway_log = gw.url, gw.log
            node = swarm.nodes[0] if swarm else None
            fuzzer = Fuzzer(args, swarm.initial_peers if swarm else args.peers,
                            node.peer_id if node else args.node, node, gateway)
            try:
                fuzzer.client.run(fuzzer.run(), timeout=args.seconds + 600)
            finally:
                fuzzer.close()
            logs = ([("node", node.log)] if node is not None else []) + ([("gateway", gateway_log)] if gateway_log
                                                                         else [])
            for who, log in logs:
                for line in _log_errors(log)[:5]:
                    fuzzer.tally.fail(None, who, f"{who} log: {line}")
        finally:
            stack.close()  # the gateway before the swarm it uses
            if swarm is not None:
                swarm.stop()
    report = summary(fuzzer.tally, args, time.monotonic() - started)
    print(json.dumps(report) if args.json else _text(report))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
