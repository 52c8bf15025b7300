"""The attack modules' swarm, attacker and honest client: real processes, one swarm per module
(attacks leave records in its DHT and sessions on its nodes that later modules must not see)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from node.local_swarm import LocalSwarm
from swarmlm.sdk import RemoteModel

from .attacker import Attacker, down

PROMPT = "What is the capital of France?"
TOKENS = 12
# Small enough that one client can fill a node's cache in a few steps, and idle sessions lose it
# after 5 s instead of 30 (the defaults otherwise); metrics on, for what info does not tell.
NODE_ARGS = ["--cache-tokens", "1024", "--evict-idle-after", "5", "--drain-grace", "5", "--metrics-port", "0"]


@pytest.fixture(scope="module")
def swarm(default_store, tmp_path_factory) -> Iterator[LocalSwarm]:
    """A bootstrap peer and 3 real nodes (float32) over blocks 0:10, 10:20, 20:30."""
    with LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("hostile"), announce_period=5.0,
                    node_args=NODE_ARGS) as s:
        s.start(3, default_store.manifest.num_blocks)
        yield s


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
    included. `inspect(model)` runs before it disconnects."""

    def answer(prompt: str = PROMPT, tokens: int = TOKENS, inspect: Callable[[RemoteModel], Any] | None = None,
               **connect: Any) -> float:
        started = time.perf_counter()
        with RemoteModel.connect(swarm.initial_peers, default_store.path, **connect) as model:
            got = model.generate(prompt, tokens).token_ids
            if inspect is not None:
                inspect(model)
        took = time.perf_counter() - started
        assert got == expected(prompt, tokens)
        assert not down(attacker, swarm.nodes)
        return took

    return answer
