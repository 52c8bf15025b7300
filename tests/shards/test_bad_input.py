"""User mistakes get a clear error and exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from shards.errors import CacheLengthError
from shards.kv_cache import KVCache
from shards.reference import pulled_source
from tests.conftest import SWARMLM

from .tiny import make_tiny_model


def _pack(src, out, env):
    return subprocess.run(SWARMLM + ["shards", "pack", str(src), "--out", str(out)], capture_output=True,
                          text=True, env=env)


def _assert_clean_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    for n in needles:
        assert n in proc.stderr


def test_a_folder_that_is_not_a_model(tmp_path, cli_env):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    _assert_clean_error(_pack(tmp_path / "notes", tmp_path / "out", cli_env), "neither a .gguf file")


def test_a_truncated_gguf(tmp_path, cli_env, default_store):
    truncated = tmp_path / "cut.gguf"
    with open(pulled_source(default_store), "rb") as f:
        truncated.write_bytes(f.read(5_000_000))
    _assert_clean_error(_pack(truncated, tmp_path / "out", cli_env), "not a readable GGUF file")


def test_an_unsupported_architecture(tmp_path, cli_env):
    folder = make_tiny_model("llama-mha", tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(config))
    _assert_clean_error(_pack(folder, tmp_path / "out", cli_env), "model_type='gpt2'")


@pytest.mark.parametrize("field,value,needle", [
    ("hidden_act", "gelu", "hidden_act"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling.rope_type"),
])
def test_an_unsupported_config_field_is_named(tmp_path, cli_env, field, value, needle):
    folder = make_tiny_model("llama-mha", tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    config.pop("rope_parameters", None) if field == "rope_scaling" else None
    (folder / "config.json").write_text(json.dumps(config))
    _assert_clean_error(_pack(folder, tmp_path / "out", cli_env), needle)


def test_unknown_model_name(cli_env):
    proc = subprocess.run(SWARMLM + ["shards", "info", "no-such-model"], capture_output=True, text=True,
                          env=cli_env)
    _assert_clean_error(proc, "unknown model 'no-such-model'")


def test_kv_cache_has_a_fixed_length_with_a_clear_error():
    cache = KVCache(1, 1, 1, 4, max_length=8, dtype=torch.float32)
    cache.check_step(0, 8)
    with pytest.raises(CacheLengthError, match="continue the sequence"):
        cache.check_step(3, 1)  # a gap: nothing cached yet
    cache.length = 4
    with pytest.raises(CacheLengthError, match="max length 8 exceeded"):
        cache.check_step(4, 5)


def test_token_ids_outside_the_vocabulary_are_a_clear_error(local_model):
    from shards.errors import ShardsError

    with pytest.raises(ShardsError, match=r"token ids must be in \[0, 49152\)"):
        local_model.generate([1, 2, 10**9], 2)
    with pytest.raises(ShardsError, match="token ids"):
        local_model.generate([-1], 2)
