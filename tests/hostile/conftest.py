"""The attack modules' swarm, attacker and honest client: real processes. Modules whose attacks
leave nothing later modules could see (streams and sessions, ended when their attacker leaves;
nodes they spawn and kill, whose records expire) share one swarm, each with fresh attacker identities; a module whose
attacks leave lasting state (records and evidence in the DHT) overrides `swarm` with its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from node.local_swarm import LocalSwarm
from swarmlm.sdk import RemoteModel

from tests.conftest import FIXED_THROUGHPUT

from .attacker import Attacker, down

PROMPT = "What is the capital of France?"
TOKENS = 6  # the answer must match the local one token for token; a few tokens are enough to tell
# Small enough that one client can fill a node's cache in a few steps, and idle sessions lose it
# after 5 s instead of 30 (the defaults otherwise); metrics on, for what info does not tell; a fixed
# announced speed instead of a measurement at every start.
NODE_ARGS = ["--cache-tokens", "1024", "--evict-idle-after", "5", "--drain-grace", "5", "--metrics-port", "0",
             *FIXED_THROUGHPUT]


@contextmanager
def hostile_swarm(default_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    """A bootstrap peer and 3 real nodes (float32) over blocks 0:10, 10:20, 20:30."""
    with LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("hostile"), announce_period=5.0,
                    node_args=NODE_ARGS) as s:
        s.start(3, default_store.manifest.num_blocks)
        yield s


@pytest.fixture(scope="package")
def shared_swarm(default_store, tmp_path_factory) -> Iterator[LocalSwarm]:
    """The swarm of the modules that leave nothing behind; it stops with this directory's tests."""
    with hostile_swarm(default_store, tmp_path_factory) as s:
        yield s


@pytest.fixture(scope="module")
def swarm(shared_swarm) -> LocalSwarm:
    return shared_swarm


@pytest.fixture(scope="module")
def attacker(swarm) -> Iterator[Attacker]:
    a = Attacker(swarm.initial_peers, swarm.nodes)
    yield a
    a.close()


@pytest.fixture(scope="module")
def accomplice(swarm) -> Iterator[Attacker]:
    """A second fresh identity: per-client limits count per identity, and identities are free."""
    a = Attacker(swarm.initial_peers, swarm.nodes)
    yield a
    a.close()


@pytest.fixture(scope="module")
def nodes(swarm) -> dict[tuple[int, int], Any]:
    return {n.blocks: n for n in swarm.nodes}


@pytest.fixture(scope="module")
def root(default_store) -> str:
    return default_store.root


@pytest.fixture(scope="session")
def expected(local_model) -> Callable[[str, int], list[int]]:
    """Local greedy token ids of (prompt, tokens): what every honest answer must equal."""
    cache: dict[tuple[str, int], list[int]] = {}

    def ids(prompt: str, tokens: int) -> list[int]:
        if (prompt, tokens) not in cache:
            cache[prompt, tokens] = local_model.generate(prompt, tokens).token_ids
        return cache[prompt, tokens]

    return ids


@pytest.fixture
def honest(swarm, attacker, default_store, expected) -> Callable[..., float]:
    """After an attack: connect a fresh honest client, generate, and assert it got exactly the local
    greedy answer and that every node is still up; returns the seconds the client took, connecting
    included. `prepare(model)` runs before it generates, `inspect(model)` before it disconnects."""

    def answer(prompt: str = PROMPT, tokens: int = TOKENS, inspect: Callable[[RemoteModel], Any] | None = None,
               prepare: Callable[[RemoteModel], Any] | None = None, **connect: Any) -> float:
        started = time.perf_counter()
        with RemoteModel.connect(swarm.initial_peers, default_store.path, **connect) as model:
            if prepare is not None:
                prepare(model)
            got = model.generate(prompt, tokens).token_ids
            if inspect is not None:
                inspect(model)
        took = time.perf_counter() - started
        assert got == expected(prompt, tokens)
        assert not down(attacker, swarm.nodes)
        return took

    return answer
