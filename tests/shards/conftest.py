"""Fixtures shared by the shards tests."""

from __future__ import annotations

import pytest

from shards.speculative import AdaptiveDraftLength


@pytest.fixture
def always_max_drafts(monkeypatch):
    """Fix k at its bound so a run does not depend on measured times (outputs are exact for any k)."""
    monkeypatch.setattr(AdaptiveDraftLength, "choose", lambda self, limit: min(self.max_draft, limit))
