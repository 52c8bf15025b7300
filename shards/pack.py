"""Pack a model (a GGUF file or a Hugging Face folder) into a content-addressed shard store.

Layout of a store: `blocks/block-00000.safetensors` … one per block, `head.safetensors`
(embeddings, final norm, LM head unless tied, and the config in its metadata), `tokenizer/`,
and `manifest.json`. Packing the same source twice gives identical bytes and the same root.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .errors import NotAModelError, ShardsError, UnsupportedModelError
from .manifest import HEAD, MANIFEST_FILE, FileEntry, Manifest, ShardEntry, sha256_file
from .progress import progress_bar

log = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "swarmlm.config"
_BLOCK_TENSOR = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_HEAD_TENSORS = {"model.embed_tokens.weight": "embed_tokens.weight", "model.norm.weight": "norm.weight",
                 "lm_head.weight": "lm_head.weight"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def block_file(i: int) -> str:
    return f"blocks/block-{i:05d}.safetensors"


def pack(src: Path, out: Path, *, dtype: str | None = None, name: str | None = None) -> Manifest:
    """Pack `src` into the store `out` (replacing an older store there) and return its manifest."""
    src, out = Path(src), Path(out)
    if dtype is not None and dtype not in _DTYPES:
        raise ShardsError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    if src.is_file() and src.suffix == ".gguf":
        source = _GGUFSource(src)
    elif src.is_dir() and (src / "config.json").is_file():
        source = _HFSource(src)
    else:
        raise NotAModelError(f"{src} is neither a .gguf file nor a Hugging Face model folder "
                             "(a folder with config.json and *.safetensors)")
    _check_replaceable(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "blocks").mkdir(parents=True)
    try:
        manifest = _write_store(source, tmp, _DTYPES.get(dtype or ""), name)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_replaceable(out: Path) -> None:
    """Never delete a folder that is not a store of ours (a typo'd --out must not wipe user data)."""
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise ShardsError(f"{out} exists and is not a shard store; choose an empty or new --out folder")


def _write_store(source: "_Source", tmp: Path, dtype: torch.dtype | None, name: str | None) -> Manifest:
    config = source.config
    shards: list[ShardEntry] = []
    with progress_bar("packing shards", config.num_layers + 1) as advance:
        for i, tensors in enumerate(source.blocks()):
            shards.append(_save_shard(f"block.{i}", block_file(i), tmp, tensors, dtype, {}))
            advance()
        head = source.head()
        if config.tie_word_embeddings:
            head.pop("lm_head.weight", None)
        metadata = {CONFIG_METADATA_KEY: json.dumps(config.to_dict(), sort_keys=True)}
        shards.append(_save_shard(HEAD, "head.safetensors", tmp, head, dtype, metadata))
        advance()
    tokenizer = source.save_tokenizer(tmp / "tokenizer")
    stored_dtype = {str(dtype or t).removeprefix("torch.") for t in source.dtypes}
    manifest = Manifest(family=config.family, config=config, dtype="/".join(sorted(stored_dtype)),
                        shards=tuple(shards), tokenizer=tokenizer, name=name, source=source.describe())
    (tmp / MANIFEST_FILE).write_text(manifest.dumps())
    return manifest


def _save_shard(name: str, file: str, root: Path, tensors: dict[str, torch.Tensor],
                dtype: torch.dtype | None, metadata: dict[str, str]) -> ShardEntry:
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = root / file
    # One metadata key only: safetensors writes its metadata map in hash order, so two keys would
    # make the same shard come out with different bytes from run to run.
    save_file(tensors, str(path), metadata=metadata or {"format": "pt"})
    return ShardEntry(name, file, sha256_file(path), path.stat().st_size, tuple(sorted(tensors)))


class _Source:
    config: ModelConfig
    dtypes: set[torch.dtype]

    def blocks(self) -> Iterator[dict[str, torch.Tensor]]:
        raise NotImplementedError

    def head(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def save_tokenizer(self, out: Path) -> tuple[FileEntry, ...]:
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        raise NotImplementedError


def _split_state(names: list[str], num_layers: int) -> tuple[list[list[str]], list[str]]:
    """Group Hugging Face tensor names into per-block lists and the head list; refuse strays."""
    per_block: list[list[str]] = [[] for _ in range(num_layers)]
    head: list[str] = []
    for n in names:
        if n.endswith("rotary_emb.inv_freq"):
            continue
        m = _BLOCK_TENSOR.match(n)
        if m and int(m.group(1)) < num_layers:
            per_block[int(m.group(1))].append(n)
        elif n in _HEAD_TENSORS:
            head.append(n)
        else:
            raise UnsupportedModelError(f"unexpected tensor {n!r} for a {num_layers}-block Llama-family model")
    return per_block, head


def _save_tokenizer(tokenizer: object, out: Path) -> tuple[FileEntry, ...]:
    tokenizer.save_pretrained(str(out))  # type: ignore[attr-defined]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return tuple(FileEntry(str(p.relative_to(out.parent)), sha256_file(p), p.stat().st_size) for p in files)


class _GGUFSource(_Source):
    """A GGUF file, dequantised by transformers' reader (it also undoes llama.cpp's q/k permutation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        arch = _gguf_architecture(path)
        if arch not in ("llama", "qwen2"):
            raise UnsupportedModelError(f"unsupported architecture: GGUF general.architecture={arch!r} "
                                        "(supported: llama, qwen2)")
        from transformers import AutoModelForCausalLM

        log.info("dequantising %s (this takes a while)", path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        self.config = ModelConfig.from_hf(model.config.to_dict())
        self.state: Mapping[str, torch.Tensor] = model.state_dict()
        self.dtypes = {t.dtype for t in self.state.values()}
        self.per_block, self.head_names = _split_state(list(self.state), self.config.num_layers)

    def blocks(self) -> Iterator[dict[str, torch.Tensor]]:
        for i, names in enumerate(self.per_block):
            prefix = f"model.layers.{i}."
            yield {n[len(prefix):]: self.state[n] for n in names}

    def head(self) -> dict[str, torch.Tensor]:
        return {_HEAD_TENSORS[n]: self.state[n] for n in self.head_names}

    def save_tokenizer(self, out: Path) -> tuple[FileEntry, ...]:
        from transformers import AutoTokenizer

        return _save_tokenizer(AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name), out)

    def describe(self) -> dict[str, str]:
        return {"kind": "gguf", "file": self.path.name, "sha256": sha256_file(self.path)}


def _gguf_architecture(path: Path) -> str:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except Exception as e:  # the reader raises assorted errors on truncated or foreign files
        raise NotAModelError(f"{path} is not a readable GGUF file (truncated or corrupt?): "
                             f"{type(e).__name__}: {e}") from None


class _HFSource(_Source):
    """A Hugging Face folder: config.json, one or more *.safetensors, optionally a tokenizer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            hf_config = json.loads((path / "config.json").read_text())
        except ValueError as e:
            raise NotAModelError(f"{path / 'config.json'} is not valid JSON: {e}") from None
        self.config = ModelConfig.from_hf(hf_config)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise NotAModelError(f"{path} has a config.json but no *.safetensors weights")
        self.where: dict[str, Path] = {}
        for f in files:
            try:
                with safe_open(str(f), framework="pt") as sf:
                    self.where.update({k: f for k in sf.keys()})
            except Exception as e:
                raise NotAModelError(f"{f} is not a readable safetensors file: {e}") from None
        self.per_block, self.head_names = _split_state(sorted(self.where), self.config.num_layers)
        missing = [i for i, names in enumerate(self.per_block) if not names]
        if missing:
            raise NotAModelError(f"{path}: no weights for blocks {missing[:5]}")
        self.dtypes: set[torch.dtype] = set()

    def _read(self, names: list[str], rename: Callable[[str], str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for f in sorted({self.where[n] for n in names}):
            with safe_open(str(f), framework="pt") as sf:
                for n in names:
                    if self.where[n] == f:
                        out[rename(n)] = sf.get_tensor(n)
        self.dtypes.update(t.dtype for t in out.values())
        return out

    def blocks(self) -> Iterator[dict[str, torch.Tensor]]:
        for i, names in enumerate(self.per_block):
            prefix = f"model.layers.{i}."
            yield self._read(names, lambda n, p=prefix: n[len(p):])

    def head(self) -> dict[str, torch.Tensor]:
        head = self._read(self.head_names, _HEAD_TENSORS.__getitem__)
        if "embed_tokens.weight" not in head or "norm.weight" not in head:
            raise NotAModelError(f"{self.path}: missing embeddings or final norm")
        if "lm_head.weight" not in head and not self.config.tie_word_embeddings:
            raise NotAModelError(f"{self.path}: untied model without lm_head.weight")
        return head

    def save_tokenizer(self, out: Path) -> tuple[FileEntry, ...]:
        if not any((self.path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
            log.warning("%s has no tokenizer: the store will only accept token ids", self.path)
            return ()
        from transformers import AutoTokenizer

        return _save_tokenizer(AutoTokenizer.from_pretrained(str(self.path)), out)

    def describe(self) -> dict[str, str]:
        return {"kind": "huggingface", "folder": self.path.name}
