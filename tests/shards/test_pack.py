"""Packing is deterministic and content-addressed; verification and loading name a corrupt shard."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from shards.errors import ShardIntegrityError
from shards.manifest import Manifest
from shards.pack import pack
from shards.store import ShardStore
from tests.conftest import SWARMLM

from .tiny import make_tiny_model


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return make_tiny_model("llama-gqa-tied", tmp_path_factory.mktemp("tiny") / "hf")


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_packing_again_gives_identical_files_and_root(tiny_folder, tmp_path):
    """Several times over: a map written in hash order once made the head differ one run in three."""
    first = pack(tiny_folder, tmp_path / "a")
    for i in range(5):
        again = pack(tiny_folder, tmp_path / f"b{i}")
        assert again.root == first.root
        assert _files(tmp_path / f"b{i}") == _files(tmp_path / "a")


def test_root_changes_when_one_tensor_changes(tiny_folder, tmp_path):
    original = pack(tiny_folder, tmp_path / "a")
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in tiny_folder.iterdir():
        (edited / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(edited / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] += 1.0
    save_file(tensors, str(edited / "model.safetensors"), metadata={"format": "pt"})
    changed = pack(edited, tmp_path / "b")
    assert changed.root != original.root
    differing = [x.name for x, y in zip(original.shards, changed.shards) if x.sha256 != y.sha256]
    assert differing == ["block.1"]


def test_manifest_records_digests_sizes_tensors_and_root(tiny_folder, tmp_path):
    m = pack(tiny_folder, tmp_path / "s")
    d = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert d["root"] == m.root and d["format"] == "swarmlm-manifest/1"
    assert [s["name"] for s in d["shards"]] == ["block.0", "block.1", "block.2", "head"]
    assert all(len(s["sha256"]) == 64 and s["size"] > 0 and s["tensors"] for s in d["shards"])
    assert "lm_head.weight" not in d["shards"][-1]["tensors"]  # tied embeddings are stored once


def _flip_byte(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_names_the_one_shard_with_a_flipped_byte(tiny_folder, tmp_path, cli_env):
    store = tmp_path / "s"
    pack(tiny_folder, store)
    _flip_byte(store / "blocks" / "block-00002.safetensors")
    assert ShardStore(store).verify() == ["block.2"]
    proc = subprocess.run(SWARMLM + ["shards", "verify", str(store)], capture_output=True, text=True, env=cli_env)
    assert proc.returncode == 1
    assert "block.2" in proc.stdout and "block.0" not in proc.stdout


def test_loading_a_modified_shard_is_an_error_naming_it(tiny_folder, tmp_path):
    store = tmp_path / "s"
    pack(tiny_folder, store)
    _flip_byte(store / "head.safetensors")
    loaded = ShardStore(store)
    loaded.load_blocks(0, 3)  # untouched shards still load
    with pytest.raises(ShardIntegrityError, match="head"):
        loaded.load_head()


def test_edited_manifest_is_refused(tiny_folder, tmp_path):
    store = tmp_path / "s"
    pack(tiny_folder, store)
    d = json.loads((store / "manifest.json").read_text())
    d["shards"][0]["sha256"] = "00" * 32
    (store / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(Exception, match="edited"):
        Manifest.load(store)


def test_info_json_has_root_blocks_family(tiny_folder, tmp_path, cli_env):
    store = tmp_path / "s"
    m = pack(tiny_folder, store)
    proc = subprocess.run(SWARMLM + ["shards", "info", str(store), "--json"], capture_output=True, text=True,
                          env=cli_env, check=True)
    info = json.loads(proc.stdout)
    assert (info["root"], info["num_blocks"], info["family"]) == (m.root, 3, "llama")


def test_pack_refuses_to_overwrite_a_folder_that_is_not_a_store(tiny_folder, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(Exception, match="not a shard store"):
        pack(tiny_folder, precious)
    assert (precious / "thesis.txt").exists()
