"""Shared fixtures: the default model's packed store (pulled by `make test`), and transformers' reference."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# hivemind keeps each MPFuture's state byte in torch shared memory, by default through torch's
# "file_system" strategy: every process that makes a DHT call (node, bootstrap peer, gateway, the test
# process) then starts a torch_shm_manager helper, which loads libtorch (~0.15 CPU-s; a 3-node swarm's
# start took 5.5 CPU-s, 4.6 without). Shared file descriptors need no helper but cost each DHT call
# ~0.3 ms more (the descriptor goes over a socket): repaid within a test's swarm lifetime (~500 calls,
# 20 minutes of an idle node announcing every 5 s), not over a volunteer node's days, so only the
# tests' processes (forked or exec'd from here, which inherit the environment) share this way.
os.environ.setdefault("HIVEMIND_MEMORY_SHARING_STRATEGY", "file_descriptor")
SWARMLM = [sys.executable, "-m", "swarmlm.cli"]
# Node args for swarms whose tests do not route by speed: announce a fixed tokens/s instead of measuring
# it at every start (a quantized span takes tens of seconds to measure on a CI core).
FIXED_THROUGHPUT = ("--throughput", "100")


def log_tails(swarm, lines: int = 25) -> str:
    """The last lines of every node's log, for an assertion message about a swarm."""
    return "".join(f"\n--- {n.name} ({n.peer_id[-8:]}) ---\n" + "\n".join(Path(n.log).read_text().splitlines()[-lines:])
                   for n in swarm.nodes)


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


@pytest.fixture(scope="session")
def swarm3(default_store, tmp_path_factory):
    """A bootstrap peer and 3 real node processes (float32) splitting the default model's 30 blocks,
    each serving /metrics on a port of its own (its log's `metrics URL` line)."""
    from node.local_swarm import LocalSwarm

    swarm = LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("swarm3"), announce_period=5.0,
                       node_args=["--metrics-port", "0", *FIXED_THROUGHPUT])
    with swarm:
        swarm.start(3, default_store.manifest.num_blocks)
        yield swarm


@pytest.fixture(scope="session")
def remote_model(swarm3, default_store, tmp_path_factory):
    from swarmlm.sdk import RemoteModel

    client_dir = tmp_path_factory.mktemp("client")
    with RemoteModel.connect(swarm3.initial_peers, default_store.path, identity=client_dir / "identity.key",
                             ledger=client_dir / "ledger.sqlite") as model:
        yield model


MODEL_FIXTURES = {"default_store", "local_model", "reference_model", "expected"}
SWARM_FIXTURES = {"swarm3", "remote_model", "gateway", "client", "async_client", "swarm", "attacker", "honest"}
PROCESS_CALLS = ("LocalSwarm(", "subprocess.", "SWARMLM,", "*SWARMLM")
# Swarms that outlive a module: stopped after the last test that uses them (`pytest_runtest_teardown`).
SHARED_SWARMS = ("swarm3", "shared_swarm")
# Each xdist group's wall seconds in the heavy tier: `python scripts/cpu_profile.py --group-seconds`.
GROUP_SECONDS = Path(__file__).with_name("group_seconds.json")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups into the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tier tests by what they need, so `make unit` runs without the model or processes; group them
    for `pytest -n` (`--dist loadgroup`): a module's tests stay on one worker, so its module fixtures
    start once; the WAN lab's modules share one worker, since they make and count namespaces; and so do
    the modules on the shared `swarm3` (and its gateway), which a session fixture would otherwise start,
    and keep to the end, on every worker (about 3.5 GiB each), the attack modules on the hostile
    package's shared swarm, and the modules that load transformers' reference (15 CPU-seconds each time). Groups run longest first (`GROUP_SECONDS`),
    so the last ones to start are short and both workers finish together."""
    sources: dict[Path, str] = {}
    groups: dict[pytest.Item, str] = {}
    referenced = {Path(item.fspath) for item in items if "reference_model" in item.fixturenames}
    for item in items:
        names = set(item.fixturenames)
        path = Path(item.fspath)
        group = ("wan" if path.parent.name == "wan" else "swarm3" if "swarm3" in names
                 else "hostile" if "shared_swarm" in names else "reference" if path in referenced
                 else str(path.relative_to(REPO)))
        groups[item] = group
        item.add_marker(pytest.mark.xdist_group(group))
        if path not in sources:
            sources[path] = path.read_text(encoding="utf-8", errors="replace")
        if names & SWARM_FIXTURES or any(call in sources[path] for call in PROCESS_CALLS):
            item.add_marker(pytest.mark.swarm)
        if names & (MODEL_FIXTURES | SWARM_FIXTURES):
            item.add_marker(pytest.mark.model)
    items.sort(key=_longest_group_first(groups))  # stable: a group's tests stay in their order


def _longest_group_first(groups: dict[pytest.Item, str]) -> Callable[[pytest.Item], tuple[float, int]]:
    """Sort key: the group's measured seconds, longest first (the longest-processing-time rule, which
    `make heavy` keeps with `--no-loadscope-reorder`: xdist would order groups by their number of
    tests); then the group's first place in the collection, so a group stays whole. A group not
    measured yet counts as the measured mean per test times its tests."""
    sizes = Counter(groups.values())
    measured = {g: s for g, s in json.loads(GROUP_SECONDS.read_text()).items() if g in sizes}
    per_test = sum(measured.values()) / sum(sizes[g] for g in measured) if measured else 1.0
    first = {g: i for i, g in reversed(list(enumerate(groups.values())))}
    return lambda item: (-measured.get(groups[item], per_test * sizes[groups[item]]), first[groups[item]])


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop a shared swarm, and first what uses it (clients, gateways), once the next test does not use
    it, instead of at the end of the session (or package): its group runs whole on one worker, longest
    first, so its processes would idle (about 3.5 GiB, and CPU for DHT upkeep) through the rest of
    that worker's run. A later test that asked for it again would get a fresh one. With no next test,
    pytest's own teardown follows."""
    if nextitem is None:
        return
    for name in SHARED_SWARMS:
        if name in item.fixturenames and name not in nextitem.fixturenames:
            for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
                fixturedef.finish(item._request)  # runs its dependents' finalizers first
