"""Where the suite's CPU and memory go: a pytest plugin that records each test's wall time and CPU
seconds (pytest's own plus its reaped children: nodes, gateways, p2pd), the test process's anonymous
memory after it and the machine's available memory, and a report per module.

Wall time on a shared 2-core machine says little; CPU seconds do not depend on the load, and their
sum over the heavy tier is the floor of its time on two cores, however it is scheduled.

    PYTHONPATH=.:scripts python -m pytest -p cpu_profile -m "(model or swarm) and not bigmodel and not long"
    python scripts/cpu_profile.py [cpu-profile.jsonl]      # the report, most CPU first
    python scripts/cpu_profile.py --group-seconds [cpu-profile.jsonl] > tests/group_seconds.json

The second form writes each xdist group's wall seconds (from a `make heavy` run), which
tests/conftest.py reads to start the longest groups first.

A module's session- or package-scoped processes count where they are reaped (at the end of the
run), and a test's children only once they exit (forked nodes: once the fork server reaps them). Memory is what an xdist worker holds (`RssAnon`: what
the OOM killer weighs) and the lowest `MemAvailable` seen: the tier's memory headroom.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.forkserver import ForkServer

OUT = Path(os.environ.get("CPU_PROFILE_OUT", "cpu-profile.jsonl"))


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime + _forked_cpu()


def _forked_cpu() -> float:
    """CPU seconds of the node fork server and the nodes it has reaped (utime, stime, cutime, cstime):
    forked nodes are the server's children, which this process reaps only at its end."""
    pid = ForkServer.shared_pid()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() if pid else []
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


OUTCOME = pytest.StashKey[str]()


def _mib(path: str, field: str) -> int:
    """A `field:  N kB` line of a /proc file, in MiB (0 where there is no /proc)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Remember how the test ended (a failed set-up or teardown counts as failed), for its line."""
    report = (yield).get_result()
    if report.failed or (report.when == "call" and item.stash.get(OUTCOME, "") != "failed"):
        item.stash[OUTCOME] = report.outcome


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    started, (own, children) = time.monotonic(), _cpu()
    yield
    own_after, children_after = _cpu()
    with OUT.open("a") as f:  # one short line per test: appends from xdist workers do not interleave
        f.write(json.dumps({"id": item.nodeid, "wall": time.monotonic() - started, "self": own_after - own,
                            "children": children_after - children, "anon_mib": _mib("/proc/self/status", "RssAnon"),
                            "available_mib": _mib("/proc/meminfo", "MemAvailable"),
                            "outcome": item.stash.get(OUTCOME, "skipped")}) + "\n")


def report(path: Path) -> list[str]:
    """One line per module (tests, wall, own and children's CPU seconds, the test process's largest
    anonymous memory), most CPU first, then the total, the lowest available memory and the tests that failed."""
    modules: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0])
    failed, available = [], []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("outcome") == "failed":
            failed.append(row["id"])
        m = modules[row["id"].split("::")[0]]
        m[0] += 1
        m[1] += row["wall"]
        m[2] += row["self"]
        m[3] += row["children"]
        m[4] = max(m[4], row.get("anon_mib", 0))
        available += [(row["available_mib"], row["id"])] if row.get("available_mib") else []
    total = [sum(m[i] for m in modules.values()) for i in range(4)]
    lines = [f"{name:58s} {n:4.0f} tests  wall {wall:6.0f} s  cpu {own + kids:6.0f} s (children {kids:5.0f})"
             f"  anon {anon:5.0f} MiB" for name, (n, wall, own, kids, anon)
             in sorted(modules.items(), key=lambda kv: -(kv[1][2] + kv[1][3]))]
    n, wall, own, kids = total
    low = [f"lowest available memory: {min(available)[0]} MiB, after {min(available)[1]}"] if available else []
    return [*lines, f"{'all':58s} {n:4.0f} tests  wall {wall:6.0f} s  cpu {own + kids:6.0f} s (children {kids:5.0f})",
            *low, *(f"failed: {test}" for test in failed)]


def group_seconds(path: Path) -> dict[str, int]:
    """Wall seconds per xdist group (the `@group` xdist appends to a test id; else the module), longest first."""
    groups: dict[str, float] = defaultdict(float)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        test = row["id"]
        groups[test.rsplit("@", 1)[1] if "@" in test else test.split("::")[0]] += row["wall"]
    return {group: round(wall) for group, wall in sorted(groups.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=OUT, help="the plugin's output (default %(default)s)")
    parser.add_argument("--group-seconds", action="store_true",
                        help="print each xdist group's wall seconds as JSON (for tests/group_seconds.json)")
    args = parser.parse_args()
    print(json.dumps(group_seconds(args.path), indent=1) if args.group_seconds else "\n".join(report(args.path)))


if __name__ == "__main__":
    main()
