"""The KV-cache pool a node runs with: `--cache-tokens`, or with `--grow-cache` what its budget holds beside
its blocks; the pool that admission, the record and the metrics count; and kept across a move."""

from __future__ import annotations

import asyncio

import psutil
import torch

from ledger.keys import Identity
from node.config import OPTIONS, NodeConfig, resolve
from node.memory import grown_cap, memory_budget, pool_tokens
from node.metrics import NodeMetrics
from node.selection import GROWN_RESERVE_TOKENS, RESERVE_SHARE, cache_tokens_for_budget, reserve_tokens
from node.server import Node
from node.serving import Serving
from shards.blocks import BlockStack
from shards.config import ModelConfig
from shards.memory import block_bytes, kv_bytes_per_token
from swarmlm.cli import build_parser

GiB = 2**30
BLOCK, KV = 400 * 2**20, 4096  # a 70B-like block in bfloat16: bytes, and cache bytes a token takes in it


def config(*argv: str) -> NodeConfig:
    return resolve(build_parser().parse_args(["node", "run", *argv]), {})


def test_without_the_option_the_pool_is_the_configured_one():
    assert pool_tokens(config("--cache-tokens", "1000"), 80 * GiB, BLOCK, KV, blocks=80) == 1000


def test_a_grown_pool_takes_what_the_budget_holds_beside_the_blocks():
    """80 blocks of 400 MiB in 64 GiB: 32.75 GiB left, 4 KiB a token on each of the 80 blocks: 107,315 tokens."""
    grown = pool_tokens(config("--grow-cache"), 64 * GiB, BLOCK, KV, blocks=80)
    assert grown == (64 * GiB - 80 * BLOCK) // (80 * KV) == cache_tokens_for_budget(64 * GiB, BLOCK, KV, 80, 8192)
    assert grown == 107_315


def test_a_grown_pool_is_never_under_the_configured_one():
    tight = 80 * BLOCK + 100 * 80 * KV  # room for 100 tokens beside the blocks
    assert pool_tokens(config("--grow-cache", "--cache-tokens", "64"), tight, BLOCK, KV, blocks=80) == 100
    assert pool_tokens(config("--grow-cache", "--cache-tokens", "512"), tight, BLOCK, KV, blocks=80) == 512
    assert pool_tokens(config("--grow-cache"), 10 * GiB, BLOCK, KV, blocks=80) == 8192  # blocks over budget


def test_a_grown_pool_stops_at_full_length_sessions_for_a_whole_batch():
    c = config("--grow-cache", "--max-batch-tokens", "16", "--max-session-length", "1024")
    assert grown_cap(c) == 16 * 1024
    assert pool_tokens(c, 64 * GiB, BLOCK, KV, blocks=80) == 16 * 1024
    assert grown_cap(config()) == 512 * 8192  # the defaults: ~1.4 TB of this model's cache


def test_the_budget_is_max_memory_or_most_of_what_is_free():
    assert memory_budget(config("--max-memory", "3GiB")) == 3 * GiB
    assert 0 < memory_budget(config()) <= psutil.virtual_memory().total * 0.8


TINY = ModelConfig(family="llama", hidden_size=32, intermediate_size=64, num_layers=6, num_heads=2, num_kv_heads=1,
                   head_dim=16, vocab_size=16, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=64)


def serving(tmp_path, cache_tokens: int, *argv: str) -> Serving:
    c = config("--state-dir", str(tmp_path), "--page-tokens", "16", *argv)
    return Serving(c, "ab" * 32, BlockStack(TINY, 0, 2), Identity.generate(), NodeMetrics(), lambda *_: None,
                   dict, cache_tokens=cache_tokens)


def test_the_grown_pool_is_what_admission_shares_and_the_node_reports(tmp_path):
    """The record's `cache_tokens_left`, `info`'s load and the metrics all read the pool's free pages."""
    s = serving(tmp_path, 1000, "--cache-tokens", "64")
    assert (s.pool.num_pages, s.cache_tokens_free) == (63, 1008)  # 1,000 tokens in pages of 16
    assert (s.admission.pool_pages, s.admission.peer_pages) == (63, 32)  # a peer's cap: half the grown pool
    assert s.info()["load"] == {"sessions": 0, "cache_tokens_used": 0, "cache_tokens_free": 1008}


def test_a_move_keeps_the_pool(tmp_path):
    """A move keeps the span's length: the same pool serves the new blocks, not a second one beside it."""
    async def go():
        s = serving(tmp_path, 1000)
        pool = s.pool
        s.stack = BlockStack(TINY, 2, 4)
        assert s.pool is pool and s.cache_tokens_free == 1008
        s.stack = BlockStack(TINY, 3, 6)  # a span of another length (not a move the daemon makes): a pool for it
        assert s.pool is not pool and s.pool.keys.shape[0] == 3 and s.pool.num_pages == 63
        await s.stop()

    asyncio.run(go())


def test_a_growing_node_sizes_its_span_around_a_reserve_of_cache_not_only_its_pool(default_store, tmp_path):
    """`--blocks auto` leaves each block room for `--cache-tokens`; with `--grow-cache`, for more (node/selection.py
    `reserve_tokens`): here what half a block holds, SmolLM2's cache being dear beside its weights. A budget holding
    all 30 blocks beside a 1,024-token pool holds fewer beside the reserve, whose room the grown pool then takes."""
    m = default_store.manifest
    block, per_token = block_bytes(m, torch.float32), kv_bytes_per_token(m.config, torch.float32)
    budget = m.num_blocks * (block + 1024 * per_token) + 2**20
    args = ("--model", str(default_store.path), "--blocks", "auto", "--cache-tokens", "1024", "--max-memory", str(budget))
    assert Node(config(*args, "--state-dir", str(tmp_path / "pool")))._blocks_that_fit() == m.num_blocks
    grown = Node(config(*args, "--state-dir", str(tmp_path / "grown"), "--grow-cache"))._blocks_that_fit()
    reserve = int(RESERVE_SHARE * block) // per_token
    assert 1024 < reserve < GROWN_RESERVE_TOKENS
    assert grown == budget // (block + reserve * per_token) < m.num_blocks


def test_the_span_reserve_is_the_pool_unless_the_pool_grows_and_then_at_most_half_a_block():
    seventy_b, smollm2 = (433 * 2**20, 4096), (int(13.5 * 2**20), 1536)  # a block's bytes, its cache's a token
    assert reserve_tokens(8192, False, *seventy_b) == 8192
    assert reserve_tokens(8192, True, *seventy_b) == GROWN_RESERVE_TOKENS
    assert reserve_tokens(2 * GROWN_RESERVE_TOKENS, True, *seventy_b) == 2 * GROWN_RESERVE_TOKENS
    assert reserve_tokens(8192, True, *smollm2) == 8192  # half a block holds 4,608 tokens: the pool stands
    assert reserve_tokens(1024, True, *smollm2) == 4608
    assert f"at least {GROWN_RESERVE_TOKENS} tokens" in next(o.help for o in OPTIONS if o.name == "grow_cache")
    assert f"at least {GROWN_RESERVE_TOKENS} tokens" in next(o.help for o in OPTIONS if o.name == "grow_cache")
