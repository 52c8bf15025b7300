"""Benchmark the ledger: signed appends committed per second (group commit), entries verified
per second, inclusion / consistency proof time at 1,000,000 entries, and swarm generation
tokens/s with the ledger on vs off (two 3-node swarms, generations alternated).

    python scripts/bench_ledger.py [--appends 50000] [--proof-entries 1000000] [--swarm-repeats 5] [--json]

Each section is a function `(args, workdir) -> {metric: value}` listed in SECTIONS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ledger import merkle
from ledger.entries import Entry, LoadEntry, ServeEntry
from ledger.keys import Identity
from ledger.receipts import make_receipt
from ledger.store import Store
from ledger.verify import verify_ledger

MODEL = hashlib.sha256(b"bench-model").digest()


def _serve_entries(node: Identity, count: int) -> list[ServeEntry]:
    """Realistic serve entries, every tenth unreceipted; built before timing starts."""
    client = Identity.generate()
    made = []
    for i in range(count):
        blocks = (i % 24, i % 24 + 6)
        receipt = (
            None
            if i % 10 == 9
            else make_receipt(
                client,
                session=f"s{i}",
                node=node.peer_id,
                manifest_root=MODEL,
                blocks=blocks,
                tokens=128,
                outputs_digest=hashlib.sha256(b"%d" % i).digest(),
                time_ns=time.time_ns(),
            )
        )
        made.append(
            ServeEntry(
                session=f"s{i}",
                client=client.peer_id,
                manifest_root=MODEL,
                blocks=blocks,
                tokens=128,
                steps=128,
                start_ns=time.time_ns(),
                end_ns=time.time_ns(),
                steps_digest=hashlib.sha256(b"%d" % i).digest(),
                receipt=receipt,
                time_ns=time.time_ns(),
            )
        )
    return made


def _append_all(store: Store, batch: list[Entry]) -> float:
    """Queue every entry without waiting, then wait for the last; returns seconds taken."""
    start = time.perf_counter()
    futures = [store.append(entry) for entry in batch]
    for future in futures:
        future.result()
    return time.perf_counter() - start


def bench_appends(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    identity = Identity.generate()
    batch = _serve_entries(identity, args.appends)
    with Store(workdir / "appends.sqlite", identity) as store:
        seconds = _append_all(store, batch)
    return {"signed appends committed per second": args.appends / seconds}


def bench_verify(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    start = time.perf_counter()
    report = verify_ledger(workdir / "appends.sqlite")
    return {"entries verified per second": report.size / (time.perf_counter() - start)}


def _build(path: Path, entries: int) -> Store:
    """A ledger of `entries` load entries (cheaper to append than serve ones; proofs don't care)."""
    identity = Identity.generate()
    store = Store(path, identity)
    digests = tuple(hashlib.sha256(b"%d" % i).digest() for i in range(6))
    chunk = [
        LoadEntry(
            manifest_root=MODEL,
            blocks=(i % 24, i % 24 + 6),
            shard_digests=digests,
            device="cuda:0",
            dtype="bfloat16",
            time_ns=time.time_ns(),
        )
        for i in range(10_000)
    ]
    started = time.perf_counter()
    while store.size() < entries:
        _append_all(store, chunk[: entries - store.size()])
        rate = (store.size() - 1) / (time.perf_counter() - started)
        print(f"  built {store.size():,} of {entries:,} entries ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return store


def _millis(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"{statistics.mean(samples) * 1e3:.2f} ms mean, {ordered[int(len(ordered) * 0.99)] * 1e3:.2f} ms p99"


def bench_proofs(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    with _build(workdir / "large.sqlite", args.proof_entries) as store:
        size = store.size()
        root = store.root(size)
        rng = random.Random(0)
        inclusion, consistency = [], []
        for _ in range(args.proofs):
            index = rng.randrange(size)
            start = time.perf_counter()
            proof = store.inclusion_proof(index, size)
            inclusion.append(time.perf_counter() - start)
            merkle.verify_inclusion(index, size, store.row(index).leaf_hash, proof, root)
            size1 = rng.randrange(1, size)
            start = time.perf_counter()
            proof = store.consistency_proof(size1, size)
            consistency.append(time.perf_counter() - start)
            merkle.verify_consistency(size1, size, proof, store.root(size1), root)
    return {
        f"inclusion proof at {size:,} entries": _millis(inclusion),
        f"consistency proof at {size:,} entries": _millis(consistency),
    }


def bench_swarm(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Two identical 3-node swarms, one running `--ledger off`; alternate generations between them."""
    from benchlib import alternate, median_tps
    from node.local_swarm import LocalSwarm
    from shards.catalog import DEFAULT_MODEL, resolve_model
    from shards.store import ShardStore
    from swarmlm.sdk import RemoteModel

    store = ShardStore(resolve_model(DEFAULT_MODEL))
    prompt, n = "What is the capital of France?", args.swarm_tokens
    with LocalSwarm(str(store.path), workdir / "on") as on, \
            LocalSwarm(str(store.path), workdir / "off", node_args=["--ledger", "off"]) as off:
        on.start(3, store.manifest.num_blocks)
        off.start(3, store.manifest.num_blocks)
        with RemoteModel.connect(on.initial_peers, store.path) as with_ledger, \
                RemoteModel.connect(off.initial_peers, store.path) as without:
            runs = alternate({"ledger on": lambda: with_ledger.generate(prompt, n, ignore_eos=True),
                              "ledger off": lambda: without.generate(prompt, n, ignore_eos=True)},
                             args.swarm_repeats)
    tps_on, tps_off = median_tps(runs["ledger on"]), median_tps(runs["ledger off"])
    return {"swarm tokens/s, ledger on": tps_on, "swarm tokens/s, ledger off": tps_off,
            "swarm ratio ledger on/off": tps_on / tps_off}


SECTIONS: tuple[Callable[[argparse.Namespace, Path], dict], ...] = (bench_appends, bench_verify, bench_proofs,
                                                                    bench_swarm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=50_000, help="entries for the append and verify rates")
    parser.add_argument("--proof-entries", type=int, default=1_000_000, help="ledger size for proof timings")
    parser.add_argument("--proofs", type=int, default=1000, help="proofs of each kind to time")
    parser.add_argument("--swarm-repeats", type=int, default=5, help="generations per swarm (0: skip the swarm)")
    parser.add_argument("--swarm-tokens", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args(argv)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as workdir:
        for section in SECTIONS:
            if section is bench_swarm and args.swarm_repeats == 0:
                continue
            print(f"{section.__name__} ...", file=sys.stderr, flush=True)
            for metric, value in section(args, Path(workdir)).items():
                results[metric] = value
                if not args.json:
                    shown = (f"{value:,.0f}" if value >= 100 else f"{value:.2f}") if isinstance(value, float) else value
                    print(f"{metric}: {shown}", flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
