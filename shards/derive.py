"""Derived stores: a base store's blocks quantized deterministically, under a root of their own.

A derived store replaces each block shard by its quantized form (shards/quant.py) and keeps the
base's head shard and tokenizer byte for byte: the client holds the head, it is a small share of
a big model, and the logits are where precision matters most. Each quantized shard's metadata names
the scheme, the group size and the digest of the base shard it came from, so the derived root
covers them; the manifest names the `base_root`. Quantizing is deterministic, so anyone holding
the base re-derives every shard and compares digests (`verify_against_base`).

Both directions stream one block at a time: memory stays near one block, not the model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import save

from .errors import ShardsError
from .catalog import locked
from .manifest import MANIFEST_FILE, Manifest, Quantization, ShardEntry
from .pack import replacing_store, save_shard
from .paths import models_dir
from .progress import progress_bar
from .quant import quantize
from .store import ShardStore


def quantize_store(base: ShardStore, out: Path, quantization: Quantization, name: str | None = None) -> Manifest:
    """Write the derived store of `base` in `quantization` into `out` (replacing an older store there)."""
    m = base.manifest
    if m.quantization is not None:
        raise ShardsError(f"{base.path} is itself a derived ({m.quantization.scheme}) store; "
                          f"quantize its base (root {m.base_root}) instead")
    if Path(out).resolve() == base.path.resolve():
        raise ShardsError(f"--out {out} is the base store itself; choose a new folder for the derived store")
    with replacing_store(Path(out)) as tmp:
        shards: list[ShardEntry] = []
        with progress_bar(f"quantizing to {quantization.scheme}", m.num_blocks) as advance:
            for i in range(m.num_blocks):
                entry = m.block(i)
                tensors = quantize_block(base.read_shard(entry), quantization)
                shards.append(save_shard(entry.name, entry.file, tmp, tensors, quantization.metadata(entry.sha256)))
                advance()
        base.copy_file(m.head.file, m.head.sha256, m.head.name, tmp)
        shards.append(m.head)
        for t in m.tokenizer:
            base.copy_file(t.file, t.sha256, f"tokenizer:{t.file}", tmp)
        derived = Manifest(family=m.family, config=m.config, dtype=m.dtype, shards=tuple(shards), tokenizer=m.tokenizer,
                           name=name or (f"{m.name}-{quantization.scheme}" if m.name else None),
                           source={"kind": "derived", "base_name": m.name}, base_root=base.root,
                           quantization=quantization)
        (tmp / MANIFEST_FILE).write_text(derived.dumps())
    return derived


def derived_store(base: ShardStore, quantization: Quantization) -> ShardStore:
    """`base` derived in `quantization`, kept under $SWARMLM_HOME/models/derived and made on first use.

    Nodes serving `--quant` and clients checking quantized nodes' roots share it. Each load still
    hashes every shard it reads, so a damaged copy is an error, not a silent load.
    """
    out = models_dir() / "derived" / f"{base.root[:16]}-{quantization.scheme}-g{quantization.group_size}"
    with locked(out.with_name(out.name + ".lock")):
        try:
            store = ShardStore(out)
            if store.manifest.base_root == base.root and store.manifest.quantization == quantization:
                return store
        except ShardsError:
            pass  # absent or unreadable: derive it again
        quantize_store(base, out, quantization)
    return ShardStore(out)


def quantize_block(tensors: dict[str, torch.Tensor], quantization: Quantization) -> dict[str, torch.Tensor]:
    """One base block's tensors → its derived tensors: each projection weight becomes its parts."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith("_proj.weight"):
            module = name.removesuffix(".weight")
            out.update({f"{module}.{part}": v for part, v in quantize(quantization, t).items()})
        else:
            out[name] = t
    return out


def verify_against_base(derived: ShardStore, base: ShardStore) -> list[str]:
    """Re-derive every block from `base`; names of the derived shards (or records) that differ."""
    m = derived.manifest
    if m.quantization is None:
        raise ShardsError(f"{derived.path} is not a derived store (its manifest names no base_root)")
    bad = [] if base.root == m.base_root else [f"base_root (derived from {m.base_root}, the base given is {base.root})"]
    if base.manifest.num_blocks != m.num_blocks:
        return bad + [f"blocks ({m.num_blocks} derived, {base.manifest.num_blocks} in the base)"]
    with progress_bar("re-deriving blocks", m.num_blocks) as advance:
        for i in range(m.num_blocks):
            entry = base.manifest.block(i)
            tensors = quantize_block(base.read_shard(entry), m.quantization)
            data = save({k: v.contiguous() for k, v in tensors.items()}, m.quantization.metadata(entry.sha256))
            if hashlib.sha256(data).hexdigest() != m.block(i).sha256:
                bad.append(m.block(i).name)
            advance()
    if m.head.sha256 != base.manifest.head.sha256:
        bad.append(m.head.name)
    if [(t.file, t.sha256) for t in m.tokenizer] != [(t.file, t.sha256) for t in base.manifest.tokenizer]:
        bad.append("tokenizer")
    return bad
