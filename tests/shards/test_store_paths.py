"""A manifest's file names stay inside its store: `..`, absolute names and escaping links are refused, never opened."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shards.errors import NotAModelError, ShardIntegrityError
from shards.manifest import Manifest
from shards.pack import pack
from shards.store import ShardStore

from .tiny import make_tiny_model


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paths")
    pack(make_tiny_model("llama-gqa-tied", root / "hf"), root / "store")
    return root / "store"


def _copy(packed: Path, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(packed, store)
    return store


@pytest.mark.parametrize("field,index,name", [
    ("shards", 1, "../outside.safetensors"),
    ("shards", 0, "/etc/passwd"),
    ("tokenizer", 0, "tokenizer/../../secret.json"),
])
def test_a_file_name_leaving_the_store_is_refused(packed, tmp_path, field, index, name):
    store = _copy(packed, tmp_path)
    d = json.loads((store / "manifest.json").read_text())
    if not d[field]:
        d[field] = [{"file": "tokenizer/x.json", "sha256": "00" * 32, "size": 1}]
    d[field][index]["file"] = name  # the root covers digests only, so only the name check stands in the way
    (store / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(NotAModelError, match="leaves the store"):
        Manifest.load(store)


def test_a_shard_linked_outside_the_store_is_never_opened(packed, tmp_path):
    """The link points at a byte-identical copy, so opening it would pass the digest check."""
    store = _copy(packed, tmp_path)
    outside = tmp_path / "outside.safetensors"
    shard = store / "blocks" / "block-00001.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    loaded = ShardStore(store)
    assert loaded.verify() == ["block.1"]
    with pytest.raises(ShardIntegrityError, match="block.1.*resolves outside the store"):
        loaded.load_blocks(0, 3)
    loaded.load_blocks(0, 1)


def test_a_blocks_folder_linked_outside_the_store_is_refused(packed, tmp_path):
    store = _copy(packed, tmp_path)
    (store / "blocks").rename(tmp_path / "elsewhere")
    (store / "blocks").symlink_to(tmp_path / "elsewhere")
    assert ShardStore(store).verify() == ["block.0", "block.1", "block.2"]
    with pytest.raises(ShardIntegrityError, match="resolves outside"):
        ShardStore(store).load_blocks(0, 1)
