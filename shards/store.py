"""A packed shard store on disk: verify digests, load a block range or the head, open the tokenizer.

Every load hashes the exact bytes it deserialises, so a modified shard is an error naming it,
never a silent load. A derived store (shards/derive.py) loads into the same blocks built with
quantized projections (shards/quant_linear.py), so the block code runs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from .blocks import Block, BlockStack, to_module_layout
from .errors import ShardIntegrityError, ShardsError
from .head import Head
from .manifest import QUANTIZATION_METADATA_KEY, Manifest, ShardEntry, sha256_file, store_file
from .pack import CONFIG_METADATA_KEY
from .quant_linear import projection_factory, quantized_module_layout

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ShardsError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}") from None


class ShardStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)

    @property
    def root(self) -> str:
        return self.manifest.root

    @property
    def config(self):  # noqa: ANN201 - ModelConfig, re-exported for callers
        return self.manifest.config

    def verify(self) -> list[str]:
        """Names of shards and tokenizer files whose bytes do not match the manifest (empty: all good)."""
        entries = [(s.name, s.file, s.sha256) for s in self.manifest.shards]
        entries += [(f"tokenizer:{t.file}", t.file, t.sha256) for t in self.manifest.tokenizer]

        def bad(entry: tuple[str, str, str]) -> str | None:
            name, file, digest = entry
            try:
                path = store_file(self.path, file, name)
            except ShardIntegrityError:
                return name  # never opened: it resolves outside the store
            return None if path.is_file() and sha256_file(path) == digest else name

        with ThreadPoolExecutor(max_workers=2) as pool:
            return [name for name in pool.map(bad, entries) if name]

    def read_shard(self, shard: ShardEntry) -> dict[str, torch.Tensor]:
        """Read, hash and deserialise one shard; raises ShardIntegrityError naming it on mismatch."""
        return load_safetensors(self._read_verified(shard))

    def _read_verified(self, shard: ShardEntry) -> bytes:
        try:
            data = store_file(self.path, shard.file, shard.name).read_bytes()
        except FileNotFoundError:
            raise ShardIntegrityError([shard.name], f" (file {shard.file} is missing)") from None
        if hashlib.sha256(data).hexdigest() != shard.sha256:
            raise ShardIntegrityError([shard.name])
        return data

    def copy_file(self, file: str, digest: str, name: str, dest_root: Path) -> None:
        """Copy one file of this store to the same place under `dest_root` (streaming), checking its digest."""
        target = dest_root / file
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(store_file(self.path, file, name), target)
        except FileNotFoundError:
            raise ShardIntegrityError([name], f" (file {file} is missing)") from None
        if sha256_file(target) != digest:
            raise ShardIntegrityError([name])

    def load_blocks(self, start: int, end: int, device: str = "cpu", dtype: torch.dtype | None = None) -> BlockStack:
        """Blocks [start, end) on `device`; `dtype` is the compute dtype (a derived store's codes stay as stored)."""
        if not 0 <= start < end <= self.manifest.num_blocks:
            raise ShardsError(f"block range {start}:{end} is outside the model's 0:{self.manifest.num_blocks}")
        projection = projection_factory(self.manifest.quantization)
        with torch.device("meta"):
            stack = BlockStack(self.config, start, end, [Block(self.config, projection) for _ in range(start, end)])
        state: dict[str, torch.Tensor] = {}
        for i in range(start, end):
            state.update({f"blocks.{i - start}.{k}": v for k, v in self._block_state(i).items()})
        return _loaded(stack, state, device, dtype, f"blocks {start}:{end}")

    def _block_state(self, i: int) -> dict[str, torch.Tensor]:
        """One block's tensors in the module layout, refusing a shard quantized otherwise than the manifest says."""
        shard = self.manifest.block(i)
        data = self._read_verified(shard)
        q = self.manifest.quantization
        if q is None:
            return to_module_layout(load_safetensors(data))
        recorded = _quantization_record(data)
        if {k: recorded.get(k) for k in ("scheme", "group_size")} != q.to_dict():
            raise ShardIntegrityError([shard.name], f" (quantized as {recorded or 'nothing'}, the manifest says "
                                                    f"{q.to_dict()})")
        return quantized_module_layout(load_safetensors(data), q)

    def load_head(self, device: str = "cpu", dtype: torch.dtype | None = None) -> Head:
        self._check_head_config()
        with torch.device("meta"):
            head = Head(self.config)
        state = self.read_shard(self.manifest.head)
        if self.config.tie_word_embeddings:
            state["lm_head.weight"] = state["embed_tokens.weight"]
        return _loaded(head, to_module_layout(state), device, dtype, "head")

    def _check_head_config(self) -> None:
        """The head shard's metadata carries the config, so the root covers it; it must agree."""
        from safetensors import safe_open

        head = self.manifest.head
        with safe_open(str(store_file(self.path, head.file, head.name)), framework="pt") as f:
            embedded = (f.metadata() or {}).get(CONFIG_METADATA_KEY)
        if embedded is None or json.loads(embedded) != json.loads(json.dumps(self.config.to_dict())):
            raise ShardIntegrityError(["head"], " (its embedded config differs from manifest.json)")

    def tokenizer(self) -> Any:
        if not self.manifest.tokenizer:
            raise ShardsError(f"the store {self.path} has no tokenizer; pass token ids instead of text")
        from transformers import AutoTokenizer

        for t in self.manifest.tokenizer:
            store_file(self.path, t.file, f"tokenizer:{t.file}")
        return AutoTokenizer.from_pretrained(str(store_file(self.path, "tokenizer", "tokenizer")))


def _quantization_record(data: bytes) -> dict[str, Any]:
    """The quantization a shard's safetensors header records ({} when it records none or is malformed)."""
    try:
        length = int.from_bytes(data[:8], "little")
        record = json.loads(json.loads(data[8:8 + length])["__metadata__"][QUANTIZATION_METADATA_KEY])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return {}
    return record if isinstance(record, dict) else {}


def _loaded(module: nn.Module, state: dict[str, torch.Tensor], device: str, dtype: torch.dtype | None,
            what: str) -> Any:
    result = module.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ShardsError(f"{what}: tensors do not fit the architecture (missing {result.missing_keys[:3]}, "
                          f"unexpected {result.unexpected_keys[:3]})")
    module = module.to(device=device) if dtype is None else module.to(device=device, dtype=dtype)
    return module.eval().requires_grad_(False)
