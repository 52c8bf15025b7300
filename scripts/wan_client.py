"""A SwarmLM client inside a WAN lab, driven over a pipe: tests and benchmarks ask, it generates.

The harness cannot call a RemoteModel that lives in another network namespace, so `WanClient`
starts this script there and talks JSON lines with it: one request a line in, one reply a line
out. The client connects once per push mode and keeps both models between requests, so runs that
alternate (pushed and relayed, speculation on and off) compare like with like. A generation may
pause after some tokens (`WanClient.begin`): the client says which chain it is using (and the
addresses it is connected to each node through, a relay's circuit for a node at home) and waits
for `resume()`, so a test can kill a node or a relay at a known point of a generation.

    with swarm_in_lab(store, state_dir, [(0, 10), (10, 20), (20, 30)], rtt_ms=50) as (lab, swarm, client):
        g = client.generate("What is the capital of France?", 64, push=False)   # a shards Generation

    python scripts/wan_client.py --model STORE --peers MADDR…     (inside the lab; WanClient starts it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.local_swarm import LocalSwarm, even_spans  # noqa: E402
from node.reachable import RELAY_WAIT  # noqa: E402
from shards.catalog import resolve_model  # noqa: E402
from shards.generation import Generation, Session, encode_prompt  # noqa: E402
from shards.store import ShardStore  # noqa: E402
from wanlab import CLIENT, WanLab, swarm_hosts  # noqa: E402

if TYPE_CHECKING:
    from shards.drafting import ModelDrafter
    from swarmlm.sdk import RemoteModel

REPLY_TIMEOUT = 600.0  # seconds: a whole generation through a slow lab on busy cores
DRAFTERS = ("lookup", "target")  # prompt lookup; the target model as its own draft (every draft kept)


class WanClientError(RuntimeError):
    """The client in the lab failed a request, exited, or said nothing in time."""


class WanClient:
    """The harness's end of the pipe to a client running inside `lab`'s client host."""

    def __init__(self, lab: WanLab, peers: Sequence[str], model: str, *, stderr: IO | None = None,
                 request_timeout: float | None = None, log_level: str | None = None) -> None:
        """`stderr`: where the client's log goes (default: this process's stderr, which pytest shows for
        a failed test); `request_timeout`: seconds a node may stay silent before the client fails over
        (the SDK's default if None); `log_level`: e.g. "INFO" to log each ban, re-plan and failover."""
        argv = lab.wrap(CLIENT, [sys.executable, __file__, "--model", model, "--peers", *peers,
                                 *(["--request-timeout", str(request_timeout)] if request_timeout else []),
                                 *(["--log-level", log_level] if log_level else [])])
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                      text=True, bufsize=1)
        self._replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self._receive("ready")
        except BaseException:
            self.close()
            raise

    def generate(self, prompt: str, tokens: int, **options: Any) -> Generation:
        """One generation in a fresh session (`push`, `ring`, `speculative`, `drafter`, `ignore_eos`, `avoid`:
        peer IDs not to route through); its `extra` holds the chain, failovers, relayed steps, the runner's and
        each span's timing."""
        self._send({"op": "generate", "prompt": prompt, "tokens": tokens, **options})
        return _generation(self._receive("done"))

    def begin(self, prompt: str, tokens: int, pause_after: int, **options: Any) -> list[dict[str, Any]]:
        """Start a generation that pauses after `pause_after` tokens; returns the chain it is using
        then ([{"peer_id", "blocks", "via"}], `via`: the addresses of the client's connections to that
        node). Finish it with `resume()`."""
        self._send({"op": "generate", "prompt": prompt, "tokens": tokens, "pause_after": pause_after, **options})
        return self._receive("paused")["chain"]

    def resume(self) -> Generation:
        """Let the paused generation go on; its result (times are not measured across a pause)."""
        self._send({"op": "resume"})
        return _generation(self._receive("done"))

    def records(self, push: bool = True) -> dict[str, Any]:
        """The client's fresh view of the swarm: each node's `peer_id`, `blocks` and announced
        neighbour `rtt_ms`, and the round trips the client measured itself (`client_rtt_ms`)."""
        self._send({"op": "records", "push": push})
        return self._receive("records")

    def close(self) -> None:
        """End the client (it closes its models) and reap it."""
        if self._proc.stdin and not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> "WanClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def _send(self, request: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise WanClientError(f"the client in the lab exited ({self._proc.wait()})") from None

    def _receive(self, event: str) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            raise WanClientError(f"the client in the lab said nothing for {REPLY_TIMEOUT:.0f}s") from None
        if line is None:
            raise WanClientError(f"the client in the lab exited ({self._proc.wait()}); its log is on stderr")
        reply = json.loads(line)
        if reply["event"] != event:
            raise WanClientError(f"the client in the lab answered {reply['event']!r} instead of {event!r}: "
                                 f"{reply.get('message', '')}")
        return reply


@contextlib.contextmanager
def swarm_in_lab(model: str, state_dir: Path, spans: Sequence[tuple[int, int]], rtt_ms: float, *,
                 mbit: float = 100, link_rtt_ms: Mapping[frozenset[str], float] | None = None,
                 announce_period: float = 5.0, node_args: Sequence[str] = (), nat: Mapping[str, str] | None = None
                 ) -> Iterator[tuple[WanLab, LocalSwarm, WanClient]]:
    """A lab with a bootstrap peer, one node per span (node-1, node-2, … in order) and a client in it;
    `nat` puts hosts behind home routers ({host: 'cone' or 'symmetric'})."""
    with WanLab(swarm_hosts(len(spans)), rtt_ms, mbit, link_rtt_ms=link_rtt_ms, nat=nat) as lab, \
            LocalSwarm(model, state_dir, placement=lab, announce_period=announce_period, node_args=node_args,
                       ready_timeout=180 + (RELAY_WAIT if nat else 0)) as swarm:
        swarm.start_spans(spans)
        with WanClient(lab, swarm.initial_peers, model) as client:
            yield lab, swarm, client


def clients_per_rtt(model: str, rtts: Sequence[float], nodes: int, mbit: float, node_threads: int,
                    node_args: Sequence[str] = ()) -> Iterator[tuple[float, WanClient]]:
    """For each round trip in turn, a fresh lab with `nodes` nodes over even spans (started with
    `node_args` too), and its client (benchmarks: nothing of one lab's run carries over to the next)."""
    store = ShardStore(resolve_model(model))
    spans = even_spans(store.manifest.num_blocks, nodes)
    for rtt in rtts:
        with tempfile.TemporaryDirectory(prefix="wan-lab-") as tmp, \
                swarm_in_lab(str(store.path), Path(tmp), spans, rtt, mbit=mbit,
                             node_args=["--threads", str(node_threads), *node_args]) as (_, _, client):
            yield rtt, client


def time_breakdown(g: Generation) -> str:
    """Where a generation's time went, per token: waiting on nodes (of which they computed what
    they report), checking their replies, and the client's own work (head, sampling, planning)."""
    spans = g.extra["span_timing"]
    n = max(1, len(g.token_ids))
    wait, node, check = (sum(s[key] for s in spans) for key in ("wait", "node", "check"))
    client = g.total_time - wait - check
    ms = 1000 / n
    return (f"per token {g.total_time * ms:6.1f} ms = wait {wait * ms:6.1f} (node compute {node * ms:5.1f}, "
            f"network and queues {(wait - node) * ms:6.1f}) + checks {check * ms:4.1f} + client {client * ms:5.1f}; "
            f"plan+open {sum(g.extra['timing'].values()) * 1000:.0f} ms per generation")


def _generation(reply: dict[str, Any]) -> Generation:
    return Generation(**{k: reply[k] for k in ("text", "token_ids", "finish_reason", "prompt_tokens",
                                               "time_to_first_token", "total_time", "extra")})


# ---------------------------------------------------------------- inside the lab

class _Driver:
    """The client's side: models per push mode, drafters, and one request at a time (the SDK and
    the drafter's model are imported here only: the harness's end needs neither)."""

    def __init__(self, model: str, peers: list[str], replies: IO[str], request_timeout: float | None) -> None:
        self.model_path, self.peers, self.replies = model, peers, replies
        self.store = ShardStore(resolve_model(model))
        self.timeout = {"request_timeout": request_timeout} if request_timeout else {}
        self.models: dict[tuple[bool, bool, frozenset[str]], RemoteModel] = {}
        self.drafters: dict[str, ModelDrafter] = {}

    def model(self, push: bool, avoid: Sequence[str] = (), ring: bool = False) -> RemoteModel:
        """The model for a push (and ring) mode, routing around the `avoid` peers for good (benchmarks pin
        chains so)."""
        from swarmlm.sdk import RemoteModel

        key = (push, ring, frozenset(avoid))
        if key not in self.models:
            self.models[key] = model = RemoteModel.connect(self.peers, self.model_path, push=push, ring=ring,
                                                           **self.timeout)
            for peer in avoid:
                model.view.bans.ban_forever(peer)
        return self.models[key]

    def drafter(self, name: str) -> ModelDrafter | None:
        """None for prompt lookup (the default drafter), else a cached ModelDrafter."""
        if name not in DRAFTERS:
            raise ValueError(f"unknown drafter {name!r}: choose from {', '.join(DRAFTERS)}")
        if name == "target" and name not in self.drafters:
            from shards.drafting import ModelDrafter
            from shards.local import LocalModel

            self.drafters[name] = ModelDrafter(LocalModel.load(self.store), self.store.manifest)
        return self.drafters.get(name)

    def reply(self, event: str, **fields: Any) -> None:
        self.replies.write(json.dumps({"event": event, **fields}) + "\n")
        self.replies.flush()

    def records(self, push: bool = True) -> None:
        model = self.model(push)
        model.client.run(model.view.refresh(force=True))
        view = model.view
        self.reply("records", records=[{"peer_id": r.peer_id, "blocks": [r.start, r.end], "rtt_ms": r.rtt_ms}
                                       for r in view.records.values()],
                   client_rtt_ms={peer: seconds * 1000 for peer, seconds in view.rtt.items()})

    def generate(self, prompt: str, tokens: int, push: bool = True, speculative: int = 0, drafter: str = "lookup",
                 ignore_eos: bool = False, pause_after: int | None = None, avoid: Sequence[str] = (),
                 ring: bool = False) -> None:
        model = self.model(push, avoid, ring)
        ids = encode_prompt(model.tokenizer, prompt)
        options = {"ignore_eos": ignore_eos, "speculative": speculative, "drafter": self.drafter(drafter)}
        with model.inference_session(min(len(ids) + tokens, model.config.max_context)) as session:
            g = (self._paused(model, session, ids, tokens, pause_after, options) if pause_after else
                 session.generate(ids, tokens, **options))
        runner = session.runner
        g.extra.update(model.run_details(runner), timing=runner.timing,
                       span_timing=[s.timing for s in runner.closed_spans])
        if runner.ring is not None:
            g.extra["ring"] = {"restarts": runner.ring.restarts, "steps": runner.ring.steps,
                               "convictions": len(runner.ring.convictions)}
        self.reply("done", text=g.text, token_ids=g.token_ids, finish_reason=g.finish_reason,
                   prompt_tokens=g.prompt_tokens, time_to_first_token=g.time_to_first_token,
                   total_time=g.total_time, extra=g.extra)

    def _paused(self, model: RemoteModel, session: Session, ids: list[int], tokens: int, pause_after: int,
                options: dict[str, Any]) -> Generation:
        """Stream; once `pause_after` tokens are out, report the chain and wait for `resume`."""
        g = Generation("", [], "length", len(ids))
        paused = False
        for event in session.stream(ids, tokens, **options):
            g.text += event.text
            if event.token_id is not None:
                g.token_ids.append(event.token_id)
            if len(g.token_ids) >= pause_after and not paused:
                paused = True
                via = {str(p.peer_id): [str(a) for a in p.addrs]
                       for p in model.client.run(model.client.p2p.list_peers())}
                self.reply("paused", chain=[{"peer_id": s.peer, "blocks": [s.hop.start, s.hop.end],
                                             "via": via.get(s.peer, [])} for s in session.runner.spans])
                if json.loads(sys.stdin.readline() or "{}").get("op") != "resume":
                    raise ValueError("a paused generation expects 'resume'")
        if len(g.token_ids) < tokens:
            g.finish_reason = "stop"
        return g

    def close(self) -> None:
        for drafter in self.drafters.values():
            drafter.close()
        for model in self.models.values():
            model.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the packed model's store folder")
    ap.add_argument("--peers", nargs="+", required=True, metavar="MADDR")
    ap.add_argument("--request-timeout", type=float, help="seconds a node may stay silent (default: the SDK's)")
    ap.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING"],
                    help="log the SDK's routing decisions to stderr at this level (default: warnings only)")
    args = ap.parse_args(argv)
    if args.log_level:
        logging.basicConfig(level=args.log_level, format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever else writes to stdout (a library, a daemon it starts) goes to the log, not the pipe
    driver = _Driver(args.model, args.peers, replies, args.request_timeout)
    try:
        driver.model(True)
        driver.reply("ready")
        for line in sys.stdin:
            request = json.loads(line)
            op = request.pop("op")
            try:
                {"generate": driver.generate, "records": driver.records}[op](**request)
            except Exception as e:  # the harness decides what a failed request means
                driver.reply("error", message=f"{op}: {type(e).__name__}: {e}")
    finally:
        driver.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
