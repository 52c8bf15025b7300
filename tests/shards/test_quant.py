"""Quantized derived stores: reproducible roots, verification against the base, serving close to float32."""

from __future__ import annotations

import json

import pytest
import torch

from routing.evidence import relative_error, tolerance
from shards.derive import quantize_block, quantize_store, verify_against_base
from shards.errors import ShardIntegrityError
from shards.generation import encode_prompt
from shards.local import LocalModel
from shards.manifest import SCHEMES, Manifest, Quantization
from shards.memory import block_bytes, module_bytes
from shards.pack import pack
from shards.quant import dequantize, quantize
from shards.store import ShardStore
from tests.cli_call import run_cli

from .test_pack import _files, _flip_byte
from .tiny import make_tiny_model


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> ShardStore:
    root = tmp_path_factory.mktemp("tiny")
    pack(make_tiny_model("llama-bias", root / "hf"), root / "base", name="tiny")
    return ShardStore(root / "base")


@pytest.fixture(scope="module")
def default_derived(default_store, tmp_path_factory) -> dict[str, ShardStore]:
    """int8 and nf4 stores of the default model (quantized once for the module)."""
    root = tmp_path_factory.mktemp("derived")
    for scheme in ("int8", "nf4"):
        quantize_store(default_store, root / scheme, Quantization.of(scheme))
    return {scheme: ShardStore(root / scheme) for scheme in ("int8", "nf4")}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantizing_twice_gives_identical_files_and_root(tiny_base, tmp_path, scheme):
    first = quantize_store(tiny_base, tmp_path / "a", Quantization.of(scheme))
    again = quantize_store(tiny_base, tmp_path / "b", Quantization.of(scheme))
    assert again.root == first.root != tiny_base.root
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert first.base_root == tiny_base.root and first.head == tiny_base.manifest.head
    assert verify_against_base(ShardStore(tmp_path / "a"), tiny_base) == []


def test_base_manifest_keeps_its_keys_and_root(default_store):
    """Derived-store fields are optional: a base manifest has none of them and its root is unchanged."""
    d = json.loads((default_store.path / "manifest.json").read_text())
    assert "base_root" not in d and "quantization" not in d
    assert default_store.root == "b3514f43bc72a8b728e28dd7326a1caafc28f8ed20fc1b16969957412d884b35"


def test_verify_names_a_flipped_byte_in_a_quantized_shard(tiny_base, tmp_path, capsys):
    quantize_store(tiny_base, tmp_path / "q", Quantization.of("int8"))
    _flip_byte(tmp_path / "q" / "blocks" / "block-00001.safetensors")
    proc = run_cli(["shards", "verify", str(tmp_path / "q"), "--base", str(tiny_base.path)], capsys)
    assert proc.returncode == 1
    assert "BAD  block.1" in proc.stdout and "block.0" not in proc.stdout and "block.2" not in proc.stdout


def test_verify_against_the_base_catches_a_store_derived_from_other_weights(tiny_base, tmp_path, capsys):
    """A store quantized from other weights, whose manifest claims our base: every block is named."""
    pack(make_tiny_model("llama-bias", tmp_path / "other-hf", seed=1), tmp_path / "other")
    forged = tmp_path / "forged"
    quantize_store(ShardStore(tmp_path / "other"), forged, Quantization.of("nf4"))
    d = json.loads((forged / "manifest.json").read_text())
    d["base_root"] = tiny_base.root  # the root covers shard digests only, so this still loads
    (forged / "manifest.json").write_text(json.dumps(d))
    assert ShardStore(forged).verify() == []
    assert verify_against_base(ShardStore(forged), tiny_base) == ["block.0", "block.1", "block.2", "head"]
    proc = run_cli(["shards", "verify", str(forged), "--base", str(tiny_base.path)], capsys)
    assert proc.returncode == 1 and "BAD  block.2" in proc.stdout

    honest = tmp_path / "honest"
    quantize_store(tiny_base, honest, Quantization.of("nf4"))
    proc = run_cli(["shards", "verify", str(honest), "--base", str(tiny_base.path)], capsys)
    assert proc.returncode == 0 and "every block re-derives" in proc.stdout


def test_a_manifest_claiming_another_quantization_is_refused_at_load(tiny_base, tmp_path):
    quantize_store(tiny_base, tmp_path / "q", Quantization.of("int8", 32))
    d = json.loads((tmp_path / "q" / "manifest.json").read_text())
    d["quantization"]["group_size"] = 64
    (tmp_path / "q" / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ShardIntegrityError, match="block.0.*quantized as"):
        ShardStore(tmp_path / "q").load_blocks(0, 1)


def test_cli_quantize_prints_its_root_and_base(tiny_base, tmp_path, capsys):
    proc = run_cli(["shards", "quantize", str(tiny_base.path), "--scheme", "q4_1", "--out", str(tmp_path / "q")],
                   capsys)
    assert proc.returncode == 0, proc.stderr
    m = Manifest.load(tmp_path / "q")
    assert f"root {m.root}" in proc.stdout and f"base root {tiny_base.root}" in proc.stdout
    assert m.quantization == Quantization("q4_1", 32) and m.name == "tiny-q4_1"


def test_q4_1_keeps_the_default_models_q4_1_weights_exactly(default_store):
    """The default GGUF's blocks are Q4_1: re-quantizing their dequantized weights loses nothing."""
    assert default_store.manifest.source.get("block_weight_types", ["Q4_1"]) == ["Q4_1"]
    q = Quantization.of("q4_1")
    for name, w in default_store.read_shard(default_store.manifest.block(7)).items():
        if name.endswith("_proj.weight"):
            assert torch.equal(dequantize(q, quantize(q, w)), w), name


def test_int8_with_groups_of_32_keeps_q8_0_weights_exactly():
    """Q8_0 stores w = d * q (d float16, q in -127..127, one code at +-127 per block of 32)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-126, 127, (64, 128), generator=g)
    q[:, ::32] = 127 * torch.where(torch.rand(64, 4, generator=g) < 0.5, 1, -1)
    d = (torch.rand(64, 4, generator=g) * 0.01).half().float().repeat_interleave(32, dim=1)
    w = d * q
    quantization = Quantization.of("int8", 32)
    assert torch.equal(dequantize(quantization, quantize(quantization, w)), w)


@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_quantized_span_stays_within_the_calibrated_tolerance(default_store, local_model, default_derived, scheme):
    stack = default_derived[scheme].load_blocks(0, default_store.manifest.num_blocks)
    ids = torch.tensor([encode_prompt(local_model.tokenizer, "Tell me about the history of Rome in detail.")])
    with torch.inference_mode():
        hidden = local_model.head.embed(ids)
        reference, out = local_model.stack(hidden), stack(hidden)
    errors = [relative_error(out[:, i], reference[:, i]) for i in range(ids.shape[1])]
    assert 0 < max(errors) <= tolerance("float32", "float32", scheme, None)


def test_a_node_serving_nf4_or_nothing_for_the_int8_root_exceeds_its_tolerance(local_model, default_derived):
    """Checked against the int8 root's own weights, at every position (a decode step is one position)."""
    ids = torch.tensor([encode_prompt(local_model.tokenizer, "Write a poem about the sea.")])
    with torch.inference_mode():
        hidden = local_model.head.embed(ids)
        int8 = default_derived["int8"].load_blocks(0, 10)(hidden)
        nf4 = default_derived["nf4"].load_blocks(0, 10)(hidden)
    bound = tolerance("float32", "float32", "int8", "int8")
    for lie in (nf4, hidden):
        assert min(relative_error(lie[:, i], int8[:, i]) for i in range(ids.shape[1])) > 100 * bound


def test_local_generation_with_an_int8_store(default_derived):
    model = LocalModel.load(default_derived["int8"].path)
    g = model.generate("What is the capital of France?", max_new_tokens=16)
    assert "Paris" in g.text


@pytest.mark.parametrize("scheme,dtype", [(None, None), (None, torch.bfloat16), ("int8", None),
                                          ("nf4", torch.bfloat16), ("q4_1", None)])
def test_block_bytes_match_the_loaded_modules(tiny_base, tmp_path, scheme, dtype):
    store = tiny_base
    if scheme:
        quantize_store(tiny_base, tmp_path / scheme, Quantization.of(scheme))
        store = ShardStore(tmp_path / scheme)
    loaded = store.load_blocks(0, 1, dtype=dtype)
    assert module_bytes(loaded) == block_bytes(store.manifest, dtype) > 0
    if scheme:
        assert block_bytes(store.manifest) < block_bytes(tiny_base.manifest) / 1.7


def test_quantize_block_keeps_norms_and_biases(tiny_base):
    tensors = tiny_base.read_shard(tiny_base.manifest.block(0))
    derived = quantize_block(tensors, Quantization.of("int8"))
    assert torch.equal(derived["self_attn.q_proj.bias"], tensors["self_attn.q_proj.bias"])
    assert derived["self_attn.q_proj.qweight"].dtype == torch.int8
    assert not any(k.endswith("_proj.weight") for k in derived)



def test_tolerance_keeps_the_dtype_call_and_adds_schemes():
    assert tolerance("float32", "float32") == 1e-4 and tolerance("bfloat16", "float32") == 1.0
    assert tolerance("float32", "float32", "int8", "int8") == 1e-4  # one derived root: the same weights
    assert tolerance("float32", "float32") < tolerance("float32", "float32", "int8", None) \
        < tolerance("float32", "float32", "nf4", None)
    with pytest.raises(ValueError, match="int3"):
        tolerance("float32", "float32", "int3", None)
