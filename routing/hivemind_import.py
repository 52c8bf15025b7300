"""hivemind's DHT and libp2p bindings without its package `__init__`.

`import hivemind.dht` first runs `hivemind/__init__.py`, which imports the averaging, mixture-of-experts
and optimizer stacks (scipy among them) that this project never uses: about 0.9 s of CPU at the start
of every process that touches the DHT (each node, bootstrap peer, gateway and SDK client). Registering
the package as a bare namespace first makes its submodules import alone; they import what they use by
full name, never through the package's attributes. Where something imported the whole package
already, this does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def register_bare_package(name: str = "hivemind") -> None:
    """Make `name`'s submodules importable without running its `__init__` (a no-op once it is imported)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return  # not installed: the import that needs it raises as usual
    package = types.ModuleType(name)
    package.__spec__, package.__file__ = spec, spec.origin
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = package
