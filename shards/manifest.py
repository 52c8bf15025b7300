"""The model manifest: which shard files make up a model, their digests, and the model's root.

The root is the RFC 9162 Merkle root over the shard digests in order (blocks 0..N-1, head last),
so a model is identified by its content: a node serving other weights announces another root.
The head shard also embeds the architecture config, so the root covers the config too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes

from .config import ModelConfig
from .errors import NotAModelError

FORMAT = "swarmlm-manifest/1"
MANIFEST_FILE = "manifest.json"
HEAD = "head"


@dataclass(frozen=True)
class ShardEntry:
    name: str  # "block.<i>" or "head"
    file: str  # relative to the store
    sha256: str
    size: int
    tensors: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "sha256": self.sha256, "size": self.size,
                "tensors": list(self.tensors)}


@dataclass(frozen=True)
class FileEntry:
    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    family: str
    config: ModelConfig
    dtype: str
    shards: tuple[ShardEntry, ...]
    tokenizer: tuple[FileEntry, ...] = ()
    name: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return self.config.num_layers

    @property
    def root(self) -> str:
        return merkle_root([s.sha256 for s in self.shards])

    @property
    def head(self) -> ShardEntry:
        return self.shards[-1]

    def block(self, i: int) -> ShardEntry:
        if not 0 <= i < self.num_blocks:
            raise IndexError(f"block {i} is outside the model's 0..{self.num_blocks - 1}")
        return self.shards[i]

    def block_digests(self, start: int, end: int) -> list[str]:
        return [self.block(i).sha256 for i in range(start, end)]

    def inclusion_proof(self, shard_index: int) -> list[str]:
        """Proof that shard `shard_index` belongs to this root (verify with ledger.merkle)."""
        hashes = [leaf_hash(bytes.fromhex(s.sha256)) for s in self.shards]
        return [h.hex() for h in inclusion_proof(shard_index, hashes)]

    @property
    def total_size(self) -> int:
        return sum(s.size for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "family": self.family,
            "dtype": self.dtype,
            "config": self.config.to_dict(),
            "shards": [s.to_dict() for s in self.shards],
            "tokenizer": [{"file": t.file, "sha256": t.sha256, "size": t.size} for t in self.tokenizer],
            "source": self.source,
            "root": self.root,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, store: Path) -> "Manifest":
        path = Path(store) / MANIFEST_FILE
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotAModelError(f"{store} is not a packed model store (no {MANIFEST_FILE}); "
                                 "create one with `swarmlm shards pack`") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise NotAModelError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise NotAModelError(f"{path}: unknown manifest format {d.get('format') if isinstance(d, dict) else d!r}; "
                                 f"expected {FORMAT}")
        try:
            manifest = cls(
                family=d["family"],
                config=ModelConfig.from_dict(d["config"]),
                dtype=d["dtype"],
                shards=tuple(ShardEntry(s["name"], s["file"], s["sha256"], int(s["size"]), tuple(s["tensors"]))
                             for s in d["shards"]),
                tokenizer=tuple(FileEntry(t["file"], t["sha256"], int(t["size"])) for t in d.get("tokenizer", [])),
                name=d.get("name"),
                source=d.get("source") or {},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise NotAModelError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None
        if len(manifest.shards) != manifest.num_blocks + 1 or manifest.head.name != HEAD:
            raise NotAModelError(f"{path}: expected {manifest.num_blocks} block shards and a head shard")
        if d.get("root") != manifest.root:
            raise NotAModelError(f"{path}: recorded root {d.get('root')} differs from the root of its digests "
                                 f"{manifest.root}; the manifest was edited")
        return manifest


def merkle_root(hex_digests: list[str]) -> str:
    return root_from_leaf_hashes([leaf_hash(bytes.fromhex(d)) for d in hex_digests]).hex()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
