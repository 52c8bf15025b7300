"""A swarm of real node processes on this machine: for trying SwarmLM, tests, benchmarks and the demo.

`LocalSwarm` starts a bootstrap peer and N `python -m node run` processes splitting the blocks
evenly, waits until each prints its `ready` line, records them in `STATE/swarm.json`, and stops
exactly the processes it started. Nodes are forked from a Python that has imported the daemon
already (node/forkserver.py: most of a node's start-up CPU); `SWARMLM_FORK_NODES=0` execs each one
instead. With a `Placement` (the WAN lab in scripts/wanlab.py) each process runs on a host of its own
(forked into the host's network namespace, or exec'd through the placement's command), named
`bootstrap`, `node-1`, `node-2`, … and listens on that host's address.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from .errors import NodeError
from .forkserver import ForkedProcess, ForkServer, die_with_parent, kill_group

log = logging.getLogger(__name__)
NODE_CLI = [sys.executable, "-m", "node"]  # the daemon's own entry point: no need of the top-level CLI
BOOTSTRAP = "bootstrap"


def node_name(number: int) -> str:
    return f"node-{number}"


class Placement(Protocol):
    """Where each swarm process runs: the address it listens on, its network namespace (a forked node
    enters it), and the command that puts an exec'd one there."""

    def address(self, host: str) -> str: ...

    def namespace(self, host: str) -> str: ...

    def wrap(self, host: str, argv: Sequence[str]) -> list[str]: ...


@dataclass
class LocalNode:
    name: str
    blocks: tuple[int, int] | None
    pid: int
    peer_id: str
    maddrs: list[str]
    state_dir: str
    ledger: str
    log: str
    process: subprocess.Popen | ForkedProcess | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return {"name": self.name, "blocks": list(self.blocks) if self.blocks else None, "pid": self.pid,
                "peer_id": self.peer_id, "maddrs": self.maddrs, "state_dir": self.state_dir, "ledger": self.ledger,
                "log": self.log}


def _forkable(program: Sequence[str] | None) -> str | None:
    """What the fork server runs for `program`: "" for `python -m node`, a script's path for
    `python SCRIPT`; None when it must be exec'd (another interpreter, or more arguments)."""
    if program is None:
        return ""
    return program[1] if len(program) == 2 and program[0] == sys.executable else None


def even_spans(num_blocks: int, nodes: int) -> list[tuple[int, int]]:
    """Split [0, num_blocks) into `nodes` contiguous spans whose sizes differ by at most one."""
    if not 1 <= nodes <= num_blocks:
        raise NodeError(f"cannot split {num_blocks} blocks over {nodes} nodes")
    bounds = [round(i * num_blocks / nodes) for i in range(nodes + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(nodes)]


class LocalSwarm:
    def __init__(self, model: str, state_dir: Path, *, host: str = "127.0.0.1", announce_period: float = 5.0,
                 node_args: Sequence[str] = (), ready_timeout: float = 180.0, env: dict[str, str] | None = None,
                 placement: Placement | None = None) -> None:
        self.model, self.state_dir, self.host, self.placement = model, Path(state_dir), host, placement
        self.announce_period, self.node_args = announce_period, list(node_args)
        self.ready_timeout = ready_timeout
        self.env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.bootstrap: LocalNode | None = None
        self.relays: list[LocalNode] = []  # more bootstrap peers (spawn_relay), serving no blocks
        self.nodes: list[LocalNode] = []
        self.threads = 1  # per node; start() splits this machine's cores between its nodes
        self._counter = 0

    @property
    def initial_peers(self) -> list[str]:
        assert self.bootstrap is not None, "start() first"
        return self.bootstrap.maddrs[:1]

    def start(self, num_nodes: int, num_blocks: int, dtypes: Sequence[str] | None = None) -> "LocalSwarm":
        """Bootstrap peer, then `num_nodes` nodes over even spans (started together, awaited in order)."""
        return self.start_spans(even_spans(num_blocks, num_nodes) if num_nodes else [], dtypes)  # 0: just bootstrap

    def start_spans(self, spans: Sequence[tuple[int, int]], dtypes: Sequence[str] | None = None) -> "LocalSwarm":
        """Bootstrap peer, then one node per span (started together, awaited in order)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.bootstrap = self._wait(self._spawn(BOOTSTRAP, None, [
                "bootstrap", "--host", self._listen_host(BOOTSTRAP),
                "--identity", str(self.state_dir / "bootstrap.key")]))
            self.threads = max(1, (os.cpu_count() or 1) // max(1, len(spans)))
            self.await_nodes([self.spawn_node(blocks=span, dtype=dtypes[i] if dtypes else None, wait=False)
                              for i, span in enumerate(spans)])
        except BaseException:
            self.stop()
            raise
        return self

    def spawn_relay(self) -> LocalNode:
        """One more bootstrap peer, "relay-N", joined through the first: a relay for nodes at home that
        serves no blocks, so a test can kill or stall it without taking blocks away."""
        name = f"relay-{len(self.relays) + 1}"
        relay = self._wait(self._spawn(name, None, ["bootstrap", "--host", self._listen_host(name),
                                                    "--initial-peers", *self.initial_peers]))
        self.relays.append(relay)
        return relay

    def await_nodes(self, pending: Sequence[LocalNode]) -> list[LocalNode]:
        """Wait for nodes spawned with `wait=False` and add them: started together, their start-ups
        overlap. If one fails, those not yet ready are stopped too."""
        try:
            for node in pending:
                self.nodes.append(self._wait(node))
                log.info("%s ready: blocks %s peer %s", node.name, node.blocks, node.peer_id)
        except BaseException:
            for node in pending:
                if not any(n is node for n in self.nodes):
                    self._terminate(node)
            raise
        finally:
            self.write_state()
        return list(pending)

    def spawn_node(self, blocks: tuple[int, int] | None = None, *, dtype: str | None = None,
                   extra: Sequence[str] = (), wait: bool = True, program: Sequence[str] | None = None) -> LocalNode:
        """Start one more node (blocks None = auto); with `wait`, return once it is ready.

        `program` replaces `python -m node` (tests run a deliberately dishonest node this way).
        """
        self._counter += 1
        name = node_name(self._counter)
        args = ["run", "--model", self.model, "--blocks", f"{blocks[0]}:{blocks[1]}" if blocks else "auto",
                "--initial-peers", *self.initial_peers, "--host", self._listen_host(name),
                "--state-dir", str(self.state_dir / name), "--announce-period", str(self.announce_period),
                "--threads", str(self.threads), "--public-name", name,  # what status and the dashboard show
                *(["--dtype", dtype] if dtype else []), *self.node_args, *extra]
        node = self._spawn(name, blocks, args, program)
        return self.await_nodes([node])[0] if wait else node

    def _spawn(self, name: str, blocks: tuple[int, int] | None, args: list[str],
               program: Sequence[str] | None = None) -> LocalNode:
        node_dir = self.state_dir / name
        node_dir.mkdir(parents=True, exist_ok=True)
        log_path = node_dir / "node.log"
        argv = [*(program or NODE_CLI), *args]
        script = _forkable(program)
        if script is not None and self.env.get("SWARMLM_FORK_NODES", "1") != "0":
            forked = ForkServer.shared().spawn(args, env=self.env, log=log_path, program=script or None,
                                               netns=self.placement.namespace(name) if self.placement else None)
            return LocalNode(name, blocks, forked.pid, "", [], str(node_dir), str(node_dir / "ledger.sqlite"),
                             str(log_path), forked)
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(self.placement.wrap(name, argv) if self.placement else argv, stdout=out,
                                    stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                                    preexec_fn=die_with_parent)
        return LocalNode(name, blocks, proc.pid, "", [], str(node_dir), str(node_dir / "ledger.sqlite"),
                         str(log_path), proc)

    def _listen_host(self, name: str) -> str:
        return self.placement.address(name) if self.placement else self.host

    def _wait(self, node: LocalNode) -> LocalNode:
        """Block until the node prints `ready` (parsing its peer ID, multiaddrs and blocks)."""
        deadline = time.monotonic() + self.ready_timeout
        assert node.process is not None
        while time.monotonic() < deadline:
            text = Path(node.log).read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("maddr ") and line[6:] not in node.maddrs:
                    node.maddrs.append(line[6:].strip())
                if line.startswith("ready "):
                    parts = line.split()
                    node.peer_id = parts[1]
                    if "blocks" in parts:
                        a, b = parts[parts.index("blocks") + 1].split(":")
                        node.blocks = (int(a), int(b))
                    return node
            if node.process.poll() is not None:
                tail = "\n".join(text.splitlines()[-15:])
                raise NodeError(f"{node.name} exited with status {node.process.returncode} before it was ready:\n"
                                f"{tail}")
            time.sleep(0.2)
        self._terminate(node)
        raise NodeError(f"{node.name} was not ready after {self.ready_timeout:.0f}s; see {node.log}")

    def write_state(self) -> Path:
        path = self.state_dir / "swarm.json"
        state = {"model": self.model, "initial_peers": self.initial_peers,
                 "bootstrap": self.bootstrap.to_json() if self.bootstrap else None,
                 "nodes": [n.to_json() for n in self.nodes]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)
        return path

    def kill(self, node: LocalNode, sig: int = signal.SIGKILL) -> None:
        """Stop one node abruptly (tests of failover) or politely (SIGTERM)."""
        if node.process is not None and node.process.poll() is None:
            kill_group(node.process, sig)
            node.process.wait(timeout=60)
        if node in self.nodes:
            self.nodes.remove(node)
            self.write_state()

    def _terminate(self, node: LocalNode, grace: float = 30.0) -> None:
        """SIGTERM the node (it drains and leaves), then reap anything left in its process group."""
        self._terminate_all([node], grace)

    @staticmethod
    def _terminate_all(nodes: Sequence[LocalNode], grace: float = 30.0) -> None:
        """SIGTERM every node at once, so they drain and leave together (a node takes ~1-2 s to leave,
        DHT process and p2pd included: one by one, a five-node swarm's stop took ~10 s of a test run), then
        give them `grace` seconds in all and reap what is left of each process group."""
        procs = [(n, n.process) for n in nodes if n.process is not None]
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node, proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", node.name, grace)
            kill_group(proc)  # its DHT process and p2pd, if they outlived it
            proc.wait()

    def stop(self) -> None:
        """Stop every process this swarm started: nodes and relays together, then the bootstrap peer (their
        last announcements go through it)."""
        self._terminate_all([*self.nodes, *self.relays])
        if self.bootstrap is not None:
            self._terminate(self.bootstrap)

    def __enter__(self) -> "LocalSwarm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
