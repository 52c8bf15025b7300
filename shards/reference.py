"""transformers as the oracle: the same model loaded by transformers' own code from the original source.

Tests and benchmarks compare our blocks against this. It never reads our shard files, so a packing
bug cannot hide by appearing on both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import NotAModelError
from .paths import downloads_dir
from .store import ShardStore


def pulled_source(store: ShardStore) -> Path:
    """The GGUF a pulled store was packed from (kept in the download cache)."""
    source = store.manifest.source
    path = downloads_dir() / str(source.get("file", ""))
    if source.get("kind") != "gguf" or not path.is_file():
        raise NotAModelError(f"the source of {store.path} is not in the download cache; "
                             "run `swarmlm shards pull` again")
    return path


def load_reference(path: Path, dtype: torch.dtype = torch.float32) -> Any:
    """transformers' causal LM from a .gguf file or a Hugging Face folder."""
    from transformers import AutoModelForCausalLM

    if path.suffix == ".gguf":
        return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype).eval()
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
