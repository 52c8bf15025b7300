"""The WAN lab's tests: skipped as a whole, with the reason, where namespaces cannot be made (not root, no TUN)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the lab's modules import each other by name, as scripts do

import wanlab_netns  # noqa: E402


@functools.cache
def _unavailable() -> str | None:
    return wanlab_netns.unavailable_reason()


@pytest.fixture(scope="module", autouse=True)
def _namespaces_available() -> None:
    """Module scope: it then runs before the modules' own module-scoped labs, which it must guard."""
    if reason := _unavailable():
        pytest.skip(reason)


