"""The README's layout holds: imports go one way, ledger ← shards ← routing ← node ← swarmlm
(function-level imports included), so a lower package never needs a higher one to run."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ORDER = ["ledger", "shards", "routing", "node", "swarmlm"]


def _imports(path: Path) -> set[str]:
    """Our top-level packages that a module imports anywhere in its body."""
    names: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.Import):
            names |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            names.add(n.module.split(".")[0])
    return names & set(ORDER)


def test_packages_import_only_the_packages_below_them() -> None:
    wrong = []
    for rank, package in enumerate(ORDER):
        allowed = set(ORDER[:rank + 1])
        for path in sorted((REPO / package).rglob("*.py")):
            if extra := _imports(path) - allowed:
                wrong.append(f"{path.relative_to(REPO)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)
