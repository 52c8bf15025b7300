"""Our blocks reproduce transformers' logits (float32, max abs difference <= 1e-4)."""

from __future__ import annotations

import pytest
import torch

from shards.generation import encode_prompt
from shards.local import LocalModel
from shards.pack import pack
from shards.reference import load_reference
from shards.store import ShardStore

from .tiny import VARIANTS, make_tiny_model

TOL = 1e-4


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@torch.inference_mode()
def test_default_model_prefill_then_cached_decode_matches_transformers(local_model, reference_model):
    ids = torch.tensor([encode_prompt(local_model.tokenizer, "What is the capital of France?")])
    cache = local_model.stack.new_cache(1, ids.shape[1] + 8)
    head, stack = local_model.head, local_model.stack

    ours = head.logits(stack(head.embed(ids), cache, 0))
    ref_out = reference_model(ids, use_cache=True)
    assert _max_diff(ours, ref_out.logits) <= TOL
    past, pos = ref_out.past_key_values, ids.shape[1]
    for _ in range(8):
        token = ours[:, -1:].argmax(-1)
        ours = head.logits(stack(head.embed(token), cache, pos))
        ref_out = reference_model(token, past_key_values=past, use_cache=True)
        past, pos = ref_out.past_key_values, pos + 1
        assert _max_diff(ours, ref_out.logits) <= TOL


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def tiny(request, tmp_path_factory):
    folder = make_tiny_model(request.param, tmp_path_factory.mktemp(request.param) / "hf")
    store = folder.parent / "store"
    pack(folder, store)
    return LocalModel.load(store), load_reference(folder)


@torch.inference_mode()
def test_tiny_variant_prefill_and_decode(tiny):
    ours, ref = tiny
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(1))
    cache = ours.stack.new_cache(1, 16)
    logits = ours.head.logits(ours.stack(ours.head.embed(ids[:, :8]), cache, 0))
    assert _max_diff(logits, ref(ids[:, :8]).logits) <= TOL
    for pos in range(8, 12):  # cached decode, one token at a time
        logits = ours.head.logits(ours.stack(ours.head.embed(ids[:, pos:pos + 1]), cache, pos))
        assert _max_diff(logits[:, -1], ref(ids[:, :pos + 1]).logits[:, -1]) <= TOL


@torch.inference_mode()
def test_tiny_variant_chunked_prefill_uses_the_mask_path(tiny):
    ours, ref = tiny
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(2))
    cache = ours.stack.new_cache(1, 12)
    ours.stack(ours.head.embed(ids[:, :5]), cache, 0)
    logits = ours.head.logits(ours.stack(ours.head.embed(ids[:, 5:]), cache, 5))
    assert _max_diff(logits, ref(ids).logits[:, 5:]) <= TOL


def test_stateless_forward_equals_cached_prefill(tiny):
    ours, _ = tiny
    hidden = torch.randn(2, 6, ours.store.config.hidden_size)
    with torch.inference_mode():
        stateless = ours.stack(hidden)
        cached = ours.stack(hidden, ours.stack.new_cache(2, 6), 0)
    assert torch.equal(stateless, cached)


def test_bfloat16_blocks_stay_close_to_float32(tiny):
    ours, _ = tiny
    store: ShardStore = ours.store
    bf16 = store.load_blocks(0, store.manifest.num_blocks, dtype=torch.bfloat16)
    hidden = torch.randn(1, 8, store.config.hidden_size)
    with torch.inference_mode():
        a, b = ours.stack(hidden), bf16(hidden.bfloat16()).float()
    assert torch.isfinite(b).all()
    assert (a - b).norm() / a.norm() < 0.05
