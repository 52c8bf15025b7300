"""Shared fixtures: the default model's packed store (pulled by `make test`), and transformers' reference."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SWARMLM = [sys.executable, "-m", "swarmlm.cli"]


@pytest.fixture(scope="session")
def default_store():
    from shards.catalog import DEFAULT_MODEL, resolve_model
    from shards.store import ShardStore

    return ShardStore(resolve_model(DEFAULT_MODEL))


@pytest.fixture(scope="session")
def local_model(default_store):
    from shards.local import LocalModel

    return LocalModel.load(default_store)


@pytest.fixture(scope="session")
def reference_model(default_store):
    """transformers' LlamaForCausalLM loaded by transformers itself from the original GGUF."""
    from shards.reference import load_reference, pulled_source

    return load_reference(pulled_source(default_store), torch.float32)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: the real model cache, unbuffered output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("SWARMLM_HOME", str(Path.home() / ".cache" / "swarmlm"))
    return env
