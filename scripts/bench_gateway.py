"""What the OpenAI gateway adds per token, measured side by side with the SDK in one run.

Starts a local swarm of real node processes (3 by default) and a `swarmlm api` process on it, then
alternates the same greedy generation (same prompt, same max tokens) streamed through the SDK
directly and streamed through the gateway over HTTP (server-sent events), and prints, for each,
the median time per token after the first (the decode pace a reader sees), the first token's
time, the ratio, and the milliseconds per token the gateway adds. `--also-from DIR` adds a gateway
run from another checkout of SwarmLM (say, the commit before a change) on the same swarm, so
before and after are measured side by side too.

    python scripts/bench_gateway.py [--nodes 3] [--tokens 64] [--repeats 5] [--also-from DIR]
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx

from benchlib import bench_parser
from node.forkserver import die_with_parent, kill_group
from node.local_swarm import LocalSwarm
from shards.catalog import resolve_model
from shards.store import ShardStore
from swarmlm.sdk import RemoteModel

PROMPT = "Count from 1 to 300, separated by commas."  # long enough that greedy fills the budget
READY_TIMEOUT_S = 180.0


@contextmanager
def gateway(peers: list[str], state: Path, model: Path, source: Path | None = None) -> Iterator[str]:
    """A `swarmlm api` process (from the checkout `source`, default this one) on a free port; yields its
    base URL and stops it (and its children)."""
    state.mkdir(parents=True, exist_ok=True)
    log = state / "gateway.log"
    command = [sys.executable, "-m", "swarmlm.cli", "api", "--peers", *peers, "--port", "0", "--model", str(model),
               "--identity", str(state / "identity.key"), "--ledger", str(state / "ledger.sqlite")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if source is not None:
        env["PYTHONPATH"] = str(source)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=source,
                                preexec_fn=die_with_parent, env=env)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (url := next((line.split()[1] for line in log.read_text(errors="replace").splitlines()
                                if line.startswith("ready ")), None)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        finally:
            kill_group(proc)


def token_times(stream: Iterator[str]) -> tuple[list[float], str]:
    """When each non-empty piece of text arrived (perf_counter), and the whole text."""
    times, text = [], ""
    for piece in stream:
        if piece:
            times.append(time.perf_counter())
            text += piece
    return times, text


def via_sdk(model: RemoteModel, tokens: int) -> Iterator[str]:
    for event in model.stream(PROMPT, tokens):
        yield event.text


def via_gateway(http: httpx.Client, url: str, model: str, tokens: int) -> Iterator[str]:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
            "max_tokens": tokens, "stream": True}
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[6:]).get("choices") or [{}]
                yield choices[0].get("delta", {}).get("content") or ""


def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--also-from", type=Path, action="append", default=[], metavar="DIR",
                    help="also time a gateway run from this checkout (e.g. the commit before a change)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, LocalSwarm(str(store), Path(tmp)) as swarm:
        swarm.start(args.nodes, ShardStore(store).manifest.num_blocks)
        with ExitStack() as stack, httpx.Client(timeout=300) as http:
            sdk = stack.enter_context(RemoteModel.connect(swarm.initial_peers, store))
            contenders: dict[str, Callable[[], Iterator[str]]] = {"sdk": lambda: via_sdk(sdk, args.tokens)}
            for label, source in [("gateway", None), *((f"gateway@{d.name}", d.resolve()) for d in args.also_from)]:
                url = stack.enter_context(gateway(swarm.initial_peers, Path(tmp) / label, store, source))
                name = http.get(f"{url}/v1/models").json()["data"][0]["id"]
                contenders[label] = lambda url=url, name=name: via_gateway(http, url, name, args.tokens)
            runs: dict[str, list[list[float]]] = {k: [] for k in contenders}
            texts: dict[str, set[str]] = {k: set() for k in contenders}
            for r in range(args.repeats + 1):  # round 0 warms up
                for key, stream in contenders.items():
                    started = time.perf_counter()
                    times, text = token_times(stream())
                    texts[key].add(text)
                    if r:
                        runs[key].append([started, *times])
                        print(f"run {r} {key:<16} {per_token_ms([started, *times]):6.1f} ms/token", file=sys.stderr)
    if len(set.union(*texts.values())) != 1:
        print(f"the texts differ under greedy: {texts}", file=sys.stderr)
        return 1
    pieces = min(len(t) - 1 for rs in runs.values() for t in rs)
    per_token = {k: statistics.median(per_token_ms(t) for t in rs) for k, rs in runs.items()}
    first = {k: statistics.median((t[1] - t[0]) * 1000 for t in rs) for k, rs in runs.items()}
    print(f"greedy, up to {args.tokens} new tokens ({pieces} text pieces), {args.nodes} nodes on 127.0.0.1, "
          f"streamed (medians of {args.repeats})")
    for key in runs:
        print(f"{key:<16} {per_token[key]:6.2f} ms/token   first token {first[key]:6.0f} ms")
    for key in list(runs)[1:]:
        print(f"{key}/sdk {per_token[key] / per_token['sdk']:.3f}x per token; it adds "
              f"{per_token[key] - per_token['sdk']:+.2f} ms/token, {first[key] - first['sdk']:+.0f} ms to the first token")
    return 0


def per_token_ms(times: list[float]) -> float:
    """Mean gap between pieces after the first (times[0] is the request's start)."""
    return (times[-1] - times[1]) / (len(times) - 2) * 1000


if __name__ == "__main__":
    sys.exit(main())
