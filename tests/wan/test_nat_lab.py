"""Homes in the lab: a host behind its own NAT router can dial out, and nobody outside can dial in."""

from __future__ import annotations

import pytest
import wanlab_netns
from wanlab import WanLab

pytestmark = pytest.mark.swarm  # a forwarder process and namespaces


def test_the_lab_proves_a_cone_and_a_symmetric_nat_on_start():
    with WanLab(["out", "home", "flat"], rtt_ms=20, mbit=50, nat={"home": "cone", "flat": "symmetric"}) as lab:
        checks = {c.host: c for c in lab.nat_checks}
        cone, symmetric = checks["home"], checks["flat"]
        routers = [lab.spec.router_namespace("home"), lab.spec.router_namespace("flat")]
        assert set(routers) <= set(wanlab_netns.namespaces_of(lab.name))
        [check] = lab.checks
        assert abs(check.rtt_ms - 20) <= 2
        assert lab.address("home").startswith("192.168.") and lab.public_address("home").startswith("11.77.0.")
    assert wanlab_netns.namespaces_of(lab.name) == []  # routers go with the lab
    for nat in (cone, symmetric):
        assert nat.seen_from == (nat.public_address,) * 2  # dials out, masqueraded
        private, listening, mapped = nat.inbound  # no attempt from outside opened a connection
        assert private.endswith("No route to host")  # the outside host's `unreachable` route for homes
        assert listening.endswith("Connection refused") and mapped.endswith("Connection refused")
    assert len(set(cone.ports)) == 1  # one mapping, the source port kept, for every destination
    assert symmetric.ports[1] != symmetric.ports[2]  # a fresh port per connection


def test_two_homes_cannot_reach_each_other_but_both_reach_outside():
    with WanLab(["out", "home", "flat"], rtt_ms=20, mbit=50, nat={"home": "cone", "flat": "cone"}) as lab:
        dial = "import socket,sys; socket.create_connection((sys.argv[1], 9), timeout=3)"
        into_flat = lab.run("home", ["python3", "-c", dial, lab.address("flat")], timeout=30)
        assert into_flat.returncode != 0 and "No route to host" in into_flat.stderr
        for home in ("home", "flat"):
            out = lab.run(home, ["python3", "-c", dial, lab.address("out")], timeout=30)
            assert "Connection refused" in out.stderr  # reached `out`, which has nothing on port 9
