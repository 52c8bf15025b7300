"""Print line coverage per top-level package from the `.coverage` file a `--cov` test run left.

Usage: `python scripts/coverage_by_package.py [DATA_FILE]` (default `.coverage`); `make coverage`
runs the unit tier with coverage and then this.
"""

from __future__ import annotations

import argparse
import sys

import coverage

PACKAGES = ("ledger", "shards", "routing", "node", "swarmlm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_file", nargs="?", default=".coverage", help="coverage data (default .coverage)")
    args = parser.parse_args(argv)
    cov = coverage.Coverage(data_file=args.data_file)
    cov.load()
    measured = cov.get_data().measured_files()
    if not measured:
        print(f"error: {args.data_file} holds no coverage data; run `make coverage`", file=sys.stderr)
        return 2
    print(f"{'package':10} {'lines':>7} {'missed':>7} {'covered':>8}")
    for package in (*PACKAGES, None):
        include = [f"{package}/*"] if package else [f"{p}/*" for p in PACKAGES]
        analysis = [cov.analysis2(f) for f in measured if any(f"/{i[:-2]}/" in f for i in include)]
        lines = sum(len(a[1]) for a in analysis)
        missed = sum(len(a[3]) for a in analysis)
        share = 100.0 * (lines - missed) / lines if lines else 0.0
        print(f"{package or 'all':10} {lines:7d} {missed:7d} {share:7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
