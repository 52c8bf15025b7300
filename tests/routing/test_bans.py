"""A node cannot keep a client re-opening on it by answering every open with a polite refusal."""

from __future__ import annotations

from routing.chain import Bans


def test_a_polite_refusal_is_excused_once_per_window_per_peer() -> None:
    bans = Bans()
    assert bans.excuse("liar") and bans.excuse("honest")  # an expired session, a node starting to drain
    assert not bans.excuse("liar")  # the same answer again within the window: treated as a failure
    assert bans.ban("liar") == bans.base and "liar" in bans and "honest" not in bans


def test_the_excuse_renews_after_its_window() -> None:
    bans = Bans(excuse_window=0.0)
    assert bans.excuse("node") and bans.excuse("node")
