"""Homes in a WAN lab: a NAT router namespace in front of a host, as a volunteer's home router is.

The router holds the host's lab address and its end of the wire (so the lab's delay and bandwidth
are the home's uplink); the host sits behind it on a veth pair at 192.168.N.2, its default route
through the router at 192.168.N.1. nftables masquerades what leaves through the wire and forwards
back only what belongs to a connection the home opened, so nobody outside can open one to the host.
The "cone" kind keeps a connection's source port where it can (Linux's masquerade: one mapping for
every destination, the kind hole punching needs); "symmetric" draws a fresh random port for every
connection (`fully-random`), so the port a peer sees says nothing about the next connection's.

Every host outside a home, and every router, has an `unreachable` route for all homes' range: a dial
of another home's private address (announced by a node that does not know it is private) fails at
once with EHOSTUNREACH instead of waiting for a timeout, and never leaves the namespace.
"""

from __future__ import annotations

import subprocess

from wanlab_netns import create, ip
from wanlab_spec import HOMES, LabError, LabSpec

LAN = "lan0"   # the router's side of the veth pair
HOME = "eth0"  # the host's side
WIRE = "wan0"  # the router's uplink: the forwarder's TUN device (wanlab_forwarder.TUN)
MTU = 32000    # the wire's, so a home costs the forwarder no more packets than a host outside


def ruleset(kind: str) -> str:
    """The router's nftables rules: masquerade out, established connections back, nothing new in."""
    ports = " fully-random" if kind == "symmetric" else ""
    return f"""table ip home {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{LAN}" oifname "{WIRE}" accept
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat;
        oifname "{WIRE}" masquerade{ports}
    }}
}}
"""


def build_home(spec: LabSpec, host: str) -> None:
    """The host's router namespace, the veth between them, their addresses and routes, and the NAT
    (the host's own namespace exists already; the router's TUN device comes after, from the forwarder)."""
    kind = spec.nat_kind(host)
    assert kind, host
    router, inside = spec.router_namespace(host), spec.namespace(host)
    create(router)
    ip("link", "add", LAN, "netns", router, "mtu", str(MTU), "type", "veth", "peer", "name", HOME,
       "netns", inside, "mtu", str(MTU))
    ip("-n", router, "addr", "add", f"{spec.home_address(host, 1)}/24", "dev", LAN)
    ip("-n", router, "link", "set", LAN, "up")
    ip("-n", inside, "addr", "add", f"{spec.home_address(host, 2)}/24", "dev", HOME)
    ip("-n", inside, "link", "set", HOME, "up")
    ip("-n", inside, "route", "add", "default", "via", spec.home_address(host, 1))
    _in(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    _in(router, ["nft", "-f", "-"], ruleset(kind))


def refuse_homes(namespace: str) -> None:
    """Dials of any home's private address fail at once inside `namespace` (a home's own /24 is more
    specific, so its router still reaches its host)."""
    ip("-n", namespace, "route", "add", "unreachable", HOMES)


def _in(namespace: str, argv: list[str], stdin: str | None = None) -> None:
    try:
        done = subprocess.run(["ip", "netns", "exec", namespace, *argv], input=stdin, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise LabError(f"cannot run {argv[0]}: {e}") from None
    if done.returncode:
        hint = " (install nftables: apt-get install -y nftables)" if "nft" in argv[0] else ""
        raise LabError(f"`{' '.join(argv)}` in {namespace} failed{hint}: {done.stderr.strip()}")
