"""A test-only dishonest node: announces int8 weights (their root, their scheme) but computes with nf4.

Run with `--quant int8`: it derives and verifies the genuine int8 store, so its record, load entry
and attestations name the int8 root, then loads every span from the nf4 store instead. Usage: the
arguments of `python -m node`, e.g. `run ... --quant int8`.
"""

from __future__ import annotations

import sys

from shards.catalog import DEFAULT_MODEL, resolve_model
from shards.derive import derived_store
from shards.manifest import Quantization
from shards.store import ShardStore

_genuine_load = ShardStore.load_blocks


def _nf4_instead(self: ShardStore, *args, **kwargs):  # noqa: ANN001, ANN202
    if self.manifest.quantization is None or self.manifest.quantization.scheme != "int8":
        return _genuine_load(self, *args, **kwargs)
    base = ShardStore(resolve_model(DEFAULT_MODEL))
    return _genuine_load(derived_store(base, Quantization.of("nf4")), *args, **kwargs)


ShardStore.load_blocks = _nf4_instead  # type: ignore[method-assign]

if __name__ == "__main__":
    from node.cli import main

    sys.exit(main(sys.argv[1:]))
