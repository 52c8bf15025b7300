"""Pack a model (a GGUF file or a Hugging Face folder) into a content-addressed shard store.

Layout of a store: `blocks/block-00000.safetensors` … one per block, `head.safetensors`
(embeddings, final norm, LM head unless tied, and the config in its metadata), `tokenizer/`,
and `manifest.json`. Packing the same source twice gives identical bytes and the same root.

Packing streams: a source yields one block's tensors at a time (a GGUF is memory-mapped and
dequantized tensor by tensor, safetensors files are read per tensor), so the memory a pack needs
is about twice its largest shard (the tensors and their serialised copy), not the model.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
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
    return pack_source(source, out, dtype=dtype, name=name)


def pack_source(source: "Source", out: Path, *, dtype: str | None = None, name: str | None = None) -> Manifest:
    """Write the store of any `Source` (a file format, or generated weights) into `out`."""
    with replacing_store(Path(out)) as tmp:
        return _write_store(source, tmp, _DTYPES.get(dtype or ""), name)


@contextmanager
def replacing_store(out: Path) -> Iterator[Path]:
    """A fresh `OUT.partial` folder to write a store into; it replaces `out` only when all went well."""
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        # Never delete a folder that is not a store of ours (a typo'd --out must not wipe user data).
        raise ShardsError(f"{out} exists and is not a shard store; choose an empty or new --out folder")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "blocks").mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_store(source: "Source", tmp: Path, dtype: torch.dtype | None, name: str | None) -> Manifest:
    config = source.config
    shards: list[ShardEntry] = []
    with progress_bar("packing shards", config.num_layers + 1) as advance:
        for i, tensors in enumerate(source.blocks()):
            shards.append(save_shard(f"block.{i}", block_file(i), tmp, _cast(tensors, dtype), {}))
            del tensors
            advance()
        head = source.head()
        if config.tie_word_embeddings:
            head.pop("lm_head.weight", None)
        metadata = {CONFIG_METADATA_KEY: json.dumps(config.to_dict(), sort_keys=True)}
        shards.append(save_shard(HEAD, "head.safetensors", tmp, _cast(head, dtype), metadata))
        advance()
    tokenizer = source.save_tokenizer(tmp / "tokenizer")
    stored_dtype = {str(dtype or t).removeprefix("torch.") for t in source.dtypes}
    manifest = Manifest(family=config.family, config=config, dtype="/".join(sorted(stored_dtype)),
                        shards=tuple(shards), tokenizer=tokenizer, name=name, source=source.describe())
    (tmp / MANIFEST_FILE).write_text(manifest.dumps())
    return manifest


def _cast(tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return tensors
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def save_shard(name: str, file: str, root: Path, tensors: dict[str, torch.Tensor],
               metadata: dict[str, str]) -> ShardEntry:
    """Write one shard file and describe it; the same tensors and metadata always give the same bytes."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = root / file
    # One metadata key only: safetensors writes its metadata map in hash order, so two keys would
    # make the same shard come out with different bytes from run to run.
    save_file(tensors, str(path), metadata=metadata or {"format": "pt"})
    return ShardEntry(name, file, sha256_file(path), path.stat().st_size, tuple(sorted(tensors)))


class Source:
    """What a store is packed from: the config, then one block's tensors at a time, the head, the tokenizer."""

    config: ModelConfig
    dtypes: set[torch.dtype]

    def blocks(self) -> Iterator[dict[str, torch.Tensor]]:
        raise NotImplementedError

    def head(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def save_tokenizer(self, out: Path) -> tuple[FileEntry, ...]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
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


_BLOCK_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                  "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")


class _GGUFSource(Source):
    """A GGUF file, memory-mapped and dequantised one tensor at a time by gguf's own code.

    Names map as transformers maps them, and for llama the q/k rows get llama.cpp's permutation
    undone as transformers does, so the shards are bit for bit what transformers' loader produces.
    """

    def __init__(self, path: Path) -> None:
        import gguf

        self.path = path
        self.arch = _gguf_architecture(path)
        if self.arch not in ("llama", "qwen2"):
            raise UnsupportedModelError(f"unsupported architecture: GGUF general.architecture={self.arch!r} "
                                        "(supported: llama, qwen2)")
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name).to_dict()
        self.config = ModelConfig.from_hf(hf_config)
        self.tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
        arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.arch)
        self.names = gguf.get_tensor_name_map(arch, self.config.num_layers)
        self.dtypes = {torch.float32}

    def _tensor(self, hf_module: str, suffix: str = ".weight") -> torch.Tensor | None:
        import gguf

        tensor = self.tensors.get(f"{self.names.get_name(hf_module)}{suffix}")
        if tensor is None:
            return None
        # Row by row into one float32 array: dequantizing a whole tensor at once takes 3-4 copies of it.
        data = tensor.data
        weights = np.empty((*data.shape[:-1], int(tensor.shape[0])), dtype=np.float32)
        step = max(1, (1 << 24) // weights[:1].nbytes) if data.ndim > 1 else len(data)
        for row in range(0, len(data), step):
            weights[row:row + step] = gguf.dequantize(data[row:row + step], tensor.tensor_type)
        heads = {"self_attn.q_proj": self.config.num_heads, "self_attn.k_proj": self.config.num_kv_heads}
        n_head = next((n for m, n in heads.items() if hf_module.endswith(m)), None)
        if self.arch == "llama" and n_head:  # llama.cpp permutes the q/k biases too
            weights = _unpermute(weights, n_head)
        return torch.from_numpy(weights)

    def blocks(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(self.config.num_layers):
            out: dict[str, torch.Tensor] = {}
            for module in _BLOCK_MODULES:
                for suffix in (".weight", ".bias"):
                    t = self._tensor(f"model.layers.{i}.{module}", suffix)
                    if t is not None:
                        out[module + suffix] = t
            missing = [m for m in _BLOCK_MODULES if f"{m}.weight" not in out]
            if missing:
                raise NotAModelError(f"{self.path}: block {i} lacks {', '.join(missing)}")
            yield out

    def head(self) -> dict[str, torch.Tensor]:
        found = {name: self._tensor(hf_name.removesuffix(".weight")) for hf_name, name in _HEAD_TENSORS.items()}
        head = {k: v for k, v in found.items() if v is not None}
        _check_head(head, self.config, self.path)
        return head

    def block_weight_types(self) -> list[str]:
        """GGUF types of the blocks' projection weights (which derived store loses nothing: shards.quant)."""
        return sorted({t.tensor_type.name for n, t in self.tensors.items()
                       if n.startswith("blk.") and n.endswith(".weight") and len(t.shape) == 2})

    def save_tokenizer(self, out: Path) -> tuple[FileEntry, ...]:
        from transformers import AutoTokenizer

        return _save_tokenizer(AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name), out)

    def describe(self) -> dict[str, Any]:
        return {"kind": "gguf", "file": self.path.name, "sha256": sha256_file(self.path),
                "block_weight_types": self.block_weight_types()}


def _unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's interleaving of q/k rows for its RoPE layout (as transformers' GGUF loader does)."""
    dim = weights.shape[0] // n_head // 2
    return weights.reshape(n_head, dim, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def _gguf_architecture(path: Path) -> str:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except Exception as e:  # the reader raises assorted errors on truncated or foreign files
        raise NotAModelError(f"{path} is not a readable GGUF file (truncated or corrupt?): "
                             f"{type(e).__name__}: {e}") from None


class _HFSource(Source):
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
        _check_head(head, self.config, self.path)
        return head

    def save_tokenizer(self, out: Path) -> tuple[FileEntry, ...]:
        if not any((self.path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
            log.warning("%s has no tokenizer: the store will only accept token ids", self.path)
            return ()
        from transformers import AutoTokenizer

        return _save_tokenizer(AutoTokenizer.from_pretrained(str(self.path)), out)

    def describe(self) -> dict[str, Any]:
        return {"kind": "huggingface", "folder": self.path.name}


def _check_head(head: dict[str, torch.Tensor], config: ModelConfig, path: Path) -> None:
    if "embed_tokens.weight" not in head or "norm.weight" not in head:
        raise NotAModelError(f"{path}: missing embeddings or final norm")
    if "lm_head.weight" not in head and not config.tie_word_embeddings:
        raise NotAModelError(f"{path}: untied model without lm_head.weight")
