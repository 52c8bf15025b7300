"""Pinned requirements of SwarmLM's runtime closure as installed here, less what a target already has.

The GPU machine cannot reach a registry, so its bundle of wheels (`make gpu-wheels`) must hold every
dependency it lacks. This walks the installed metadata from `swarmlm` (extras left out), stops at the
packages the target already has (their own dependencies come with them there) and prints one
`name==version` a line, the versions this venv runs and the tests pass with.

    python scripts/gpu_requirements.py [--has torch transformers ...] [--add bitsandbytes]
"""

from __future__ import annotations

import argparse
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(root: str, has: set[str]) -> dict[str, str]:
    """Installed name → version for every runtime dependency reachable from `root`, not through `has`."""
    found: dict[str, str] = {}
    todo = [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found or name in has:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--has", nargs="*", default=["torch", "transformers", "safetensors", "numpy", "msgpack"],
                    help="packages the target already has")
    ap.add_argument("--add", nargs="*", default=[], help="more requirements, as given (e.g. bitsandbytes)")
    args = ap.parse_args()
    pins = closure("swarmlm", {canonicalize_name(n) for n in args.has})
    pins.pop("swarmlm")  # the project's own wheel is built, not downloaded
    print("\n".join([f"{n}=={v}" for n, v in sorted(pins.items())] + args.add))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
