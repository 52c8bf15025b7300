"""The lab measures itself on start and refuses to run when its links are not what it was told."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest
import wanlab_netns
from wanlab import SelfCheckError, WanLab

SKEWED = [sys.executable, str(Path(__file__).with_name("skewed_forwarder.py"))]


def test_selfcheck_passes_at_40ms_and_50mbit():
    with WanLab(["a", "b"], rtt_ms=40, mbit=50) as lab:
        [check] = lab.checks
    assert (check.a, check.b) == ("a", "b")
    assert abs(check.rtt_ms - 40) <= 4 and abs(check.mbit - 50) <= 5


@pytest.mark.parametrize("rtt_scale, mbit_scale, named", [
    (1.5, 1.0, r"RTT [56]\d\.\d ms instead of 40 ms"),
    (1.0, 0.6, r"throughput [23]\d\.\d Mbit/s instead of 50 Mbit/s"),
], ids=["slower", "narrower"])
def test_a_forwarder_that_differs_from_the_configuration_is_refused(rtt_scale, mbit_scale, named):
    name = secrets.token_hex(4)
    with pytest.raises(SelfCheckError, match=named) as refused:
        WanLab(["a", "b"], rtt_ms=40, mbit=50, name=name, forwarder=[*SKEWED, str(rtt_scale), str(mbit_scale)])
    assert f"lab {name} is off by more than 10%" in str(refused.value)
    assert wanlab_netns.namespaces_of(name) == []


def test_a_slow_link_measures_slow_while_the_others_keep_the_default():
    with WanLab(["a", "b", "c"], rtt_ms=40, mbit=100, link_rtt_ms={frozenset({"a", "c"}): 120}) as lab:
        default, slow = lab.checks  # measured on start: a full check of a-b, the round trip of a-c
        other = lab.selfcheck("c", "b", bulk=False)
    assert (slow.a, slow.b, slow.expected_rtt_ms) == ("a", "c", 120) and abs(slow.rtt_ms - 120) <= 12
    for check in (default, other):
        assert check.expected_rtt_ms == 40 and abs(check.rtt_ms - 40) <= 4
