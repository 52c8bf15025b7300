"""The model manifest: which shard files make up a model, their digests, and the model's root.

The root is the RFC 9162 Merkle root over the shard digests in order (blocks 0..N-1, head last),
so a model is identified by its content: a node serving other weights announces another root.
The head shard also embeds the architecture config, so the root covers the config too.

A derived store (shards/derive.py) also names its `base_root` and its `quantization`; a base
store's manifest has neither key, so its file and root are what they always were. File names are
confined to the store: absolute names, `..` and names resolving elsewhere are refused, never opened.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ledger.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes

from .config import ModelConfig
from .errors import NotAModelError, ShardIntegrityError, ShardsError

FORMAT = "swarmlm-manifest/1"
MANIFEST_FILE = "manifest.json"
HEAD = "head"
# Quantization schemes (shards/quant.py) with their default group size, and the group sizes allowed.
DEFAULT_GROUP_SIZE = {"int8": 32, "nf4": 64, "q4_1": 32}
SCHEMES = tuple(DEFAULT_GROUP_SIZE)
GROUP_SIZES = (32, 64, 128)
QUANTIZATION_METADATA_KEY = "swarmlm.quantization"


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
class Quantization:
    """A scheme and its group size: what a derived manifest records and each of its block shards repeats."""

    scheme: str
    group_size: int

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ShardsError(f"unknown quantization scheme {self.scheme!r}; choose one of {', '.join(SCHEMES)}")
        if self.group_size not in GROUP_SIZES:
            raise ShardsError(f"unsupported group size {self.group_size}; choose one of "
                              f"{', '.join(map(str, GROUP_SIZES))}")

    @classmethod
    def of(cls, scheme: str, group_size: int | None = None) -> "Quantization":
        """`scheme` at `group_size`, or at the scheme's default group size."""
        return cls(scheme, group_size or DEFAULT_GROUP_SIZE.get(scheme, 0))

    @property
    def parts(self) -> tuple[str, ...]:
        """The tensors one quantized weight is stored as (suffixes of its projection's name)."""
        return ("qweight", "scales", "mins") if self.scheme == "q4_1" else ("qweight", "scales")

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "group_size": self.group_size}

    @classmethod
    def from_dict(cls, d: Any) -> "Quantization":
        if not isinstance(d, dict) or set(d) != {"scheme", "group_size"} or type(d["group_size"]) is not int:
            raise ShardsError(f"malformed quantization record {d!r}")
        return cls(str(d["scheme"]), d["group_size"])

    def metadata(self, base_sha256: str) -> dict[str, str]:
        """A quantized shard's safetensors metadata (one key: several would come out in hash order)."""
        return {QUANTIZATION_METADATA_KEY: json.dumps({**self.to_dict(), "base_sha256": base_sha256}, sort_keys=True)}


@dataclass(frozen=True)
class Manifest:
    family: str
    config: ModelConfig
    dtype: str
    shards: tuple[ShardEntry, ...]
    tokenizer: tuple[FileEntry, ...] = ()
    name: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    base_root: str | None = None  # derived stores only: the root they were quantized from
    quantization: Quantization | None = None

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
        d = {
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
        if self.quantization is not None:
            d.update(base_root=self.base_root, quantization=self.quantization.to_dict())
        return d

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
                base_root=d.get("base_root"),
                quantization=Quantization.from_dict(d["quantization"]) if "quantization" in d else None,
            )
        except (KeyError, TypeError, ValueError, ShardsError) as e:
            raise NotAModelError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None
        derived = manifest.quantization is not None
        if derived != (manifest.base_root is not None) or not _is_hex_root_or_none(manifest.base_root):
            raise NotAModelError(f"{path}: a derived store names both its base_root (a hex root) and its quantization")
        for file in [s.file for s in manifest.shards] + [t.file for t in manifest.tokenizer]:
            if not _is_store_relative(file):
                raise NotAModelError(f"{path}: file name {file!r} leaves the store (absolute or with ..); "
                                     "refusing the manifest")
        if len(manifest.shards) != manifest.num_blocks + 1 or manifest.head.name != HEAD:
            raise NotAModelError(f"{path}: expected {manifest.num_blocks} block shards and a head shard")
        if d.get("root") != manifest.root:
            raise NotAModelError(f"{path}: recorded root {d.get('root')} differs from the root of its digests "
                                 f"{manifest.root}; the manifest was edited")
        return manifest


def _is_hex_root_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef"))


def _is_store_relative(file: Any) -> bool:
    parts = PurePosixPath(file).parts if isinstance(file, str) else ()
    return bool(parts) and not PurePosixPath(file).is_absolute() and ".." not in parts and "\\" not in file


def store_file(store: Path, file: str, what: str) -> Path:
    """`file` inside `store`, refusing one that resolves (through symbolic links) outside it."""
    path = Path(store) / file
    if not path.resolve().is_relative_to(Path(store).resolve()):
        raise ShardIntegrityError([what], f" (its file {file} resolves outside the store)")
    return path


def merkle_root(hex_digests: list[str]) -> str:
    return root_from_leaf_hashes([leaf_hash(bytes.fromhex(d)) for d in hex_digests]).hex()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
