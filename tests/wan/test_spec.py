"""A lab asked for something impossible says what to change, before it builds anything."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wanlab_forwarder import Wander
from wanlab_spec import LabError, LabSpec


@pytest.mark.parametrize("kwargs, says", [
    ({"hosts": ["a"]}, "2 to 250 distinct host names"),
    ({"hosts": ["a", "a"]}, "2 to 250 distinct host names"),
    ({"hosts": ["a", "B_1"]}, "'B_1' is not a valid host name"),
    ({"name": "my-lab"}, "'my-lab' is not a valid lab name"),
    ({"mbit": 0}, "--mbit > 0"),
    ({"mbit": 5000}, "more than 1000: the forwarder is one Python loop"),
    ({"jitter_ms": 25}, "jitter 25 ms exceeds the one-way delay of the shortest link (20 ms)"),
    ({"link_rtt_ms": {frozenset({"a", "c"}): 10}}, "two different hosts of the lab"),
    ({"link_rtt_ms": {frozenset({"a", "b"}): 10}, "jitter_ms": 8}, "shortest link (5 ms)"),
    ({"nat": {"c": "cone"}}, "a NAT names a host of the lab"),
    ({"nat": {"a": "full"}}, "a kind in ('cone', 'symmetric')"),
    ({"nat": {"a": "cone", "b": "cone"}}, "every host is behind NAT"),
])
def test_impossible_labs_are_refused_with_what_to_change(kwargs, says):
    with pytest.raises(LabError) as refused:
        LabSpec.build(**{"hosts": ["a", "b"], "rtt_ms": 40, "mbit": 50, **kwargs})
    assert says in str(refused.value)


def test_a_spec_survives_the_trip_to_the_forwarder():
    spec = LabSpec.build(["a", "b", "c"], 40, 50, 2, {frozenset({"c", "a"}): 120}, name="x1", nat={"b": "symmetric"})
    assert LabSpec.from_json(spec.to_json()) == spec
    assert (spec.rtt("c", "a"), spec.rtt("b", "a"), spec.address("c"), spec.namespace("b")) == \
        (120, 40, "11.77.0.3", "swarmlm-wan-x1-b")
    assert (spec.address("b"), spec.public_address("b"), spec.router_namespace("b"), spec.nat_kind("a")) == \
        ("192.168.2.2", "11.77.0.2", "swarmlm-wan-x1-b.router", None)


@given(st.floats(0.0001, 0.05), st.lists(st.floats(0, 0.05), min_size=2, max_size=200), st.integers(0, 2**32))
def test_jitter_never_lets_a_later_packet_overtake_an_earlier_one(amplitude, gaps, seed):
    wander, t, arrivals = Wander(amplitude, random.Random(seed)), 0.0, []
    for gap in gaps:
        t += gap
        offset = wander.at(t)
        assert -amplitude <= offset <= amplitude
        arrivals.append(t + offset)
    assert arrivals == sorted(arrivals)
