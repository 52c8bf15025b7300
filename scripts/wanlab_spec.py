"""What a WAN lab is: its hosts, their addresses, and the shape of the link between any two of them.

One frozen value, validated once, crosses from the harness to the forwarder process as JSON, so
both sides agree on every address and delay by construction.

A host may live at home, behind a NAT router of its own (`nat`): the router's namespace then holds
the host's lab address and its uplink, and the host sits behind it at a private address in its own
192.168.N.0/24, N being its place in the lab (so no two homes share a range).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Mapping, Sequence

PREFIX = "swarmlm-wan-"      # every lab's namespaces start with it, so `wanlab.py down` finds leftovers
SUBNET = "11.77.0"           # public, as the internet is to libp2p (which drops private relay and AutoNAT addresses); it never leaves the lab's namespaces
MAX_HOSTS = 250
MAX_MBIT = 1000
_LAB = re.compile(r"[a-z0-9]{1,16}")  # no '-': it separates the lab from the host in namespace names
_HOST = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
HOMES = "192.168.0.0/16"     # every home's private range; hosts outside have an `unreachable` route for it
ROUTER_SUFFIX = ".router"    # a home router's namespace is its host's plus this ('.' is in no host name)
NAT_KINDS = ("cone", "symmetric")  # port-preserving masquerade; a fresh random port per connection


class LabError(Exception):
    """The lab cannot be built, or does not behave as configured; the message says what to do."""


@dataclass(frozen=True)
class LabSpec:
    name: str
    hosts: tuple[str, ...]
    rtt_ms: float
    mbit: float
    jitter_ms: float = 0.0
    link_rtt_ms: tuple[tuple[str, str, float], ...] = ()  # (a, b, rtt) with a < b, sorted
    nat: tuple[tuple[str, str], ...] = ()  # (host, kind) for each host behind a NAT router, sorted

    @classmethod
    def build(cls, hosts: Sequence[str], rtt_ms: float, mbit: float, jitter_ms: float = 0.0,
              link_rtt_ms: Mapping[frozenset[str], float] | None = None, name: str | None = None,
              nat: Mapping[str, str] | None = None) -> "LabSpec":
        """Validate what a user asked for (a mistake here is theirs to fix, so LabError says how)."""
        hosts = tuple(hosts)
        name = name or secrets.token_hex(3)
        if not _LAB.fullmatch(name):
            raise LabError(f"{name!r} is not a valid lab name: use 1-16 lowercase letters and digits")
        for host in hosts:
            if not _HOST.fullmatch(host):
                raise LabError(f"{host!r} is not a valid host name: use 1-31 lowercase letters, digits and '-', "
                               f"starting with a letter or digit")
        if len(set(hosts)) != len(hosts) or not 2 <= len(hosts) <= MAX_HOSTS:
            raise LabError(f"a lab needs 2 to {MAX_HOSTS} distinct host names, got {list(hosts)}")
        if rtt_ms < 0 or jitter_ms < 0 or mbit <= 0:
            raise LabError(f"need --rtt-ms >= 0, --jitter-ms >= 0 and --mbit > 0 (got {rtt_ms}, {jitter_ms}, {mbit})")
        if mbit > MAX_MBIT:
            raise LabError(f"--mbit {mbit:g} is more than {MAX_MBIT}: the forwarder is one Python loop, and beyond "
                           f"that it would take a core from the nodes")
        links: list[tuple[str, str, float]] = []
        for pair, rtt in (link_rtt_ms or {}).items():
            if len(pair) != 2 or not set(pair) <= set(hosts) or rtt < 0:
                raise LabError(f"a link override names two different hosts of the lab and an RTT >= 0; got "
                               f"{sorted(pair)}={rtt} (hosts: {', '.join(hosts)})")
            a, b = sorted(pair)
            links.append((a, b, float(rtt)))
        shortest = min([rtt_ms, *(rtt for _, _, rtt in links)])
        if jitter_ms > shortest / 2:
            raise LabError(f"jitter {jitter_ms:g} ms exceeds the one-way delay of the shortest link "
                           f"({shortest / 2:g} ms), so packets would arrive before they were sent: lower --jitter-ms")
        nat = dict(nat or {})
        for host, kind in nat.items():
            if host not in hosts or kind not in NAT_KINDS:
                raise LabError(f"a NAT names a host of the lab and a kind in {NAT_KINDS}; got {host}={kind} "
                               f"(hosts: {', '.join(hosts)})")
        if nat and set(nat) == set(hosts):
            raise LabError("every host is behind NAT, so no connection could ever be opened: leave one outside "
                           "(the bootstrap peer, say)")
        return cls(name, hosts, float(rtt_ms), float(mbit), float(jitter_ms), tuple(sorted(links)),
                   tuple(sorted(nat.items())))

    def public_address(self, host: str) -> str:
        """The host's address on the lab's wire: its own, or for a host at home its router's."""
        return f"{SUBNET}.{self._place(host)}"

    def address(self, host: str) -> str:
        """The address the host itself has (and listens on): private for a host at home."""
        return self.home_address(host, 2) if self.nat_kind(host) else self.public_address(host)

    def home_address(self, host: str, last: int) -> str:
        """An address in the host's home range: .1 its router, .2 the host."""
        return f"192.168.{self._place(host)}.{last}"

    def nat_kind(self, host: str) -> str | None:
        """'cone' or 'symmetric' for a host behind a NAT router, None for one outside."""
        self._place(host)
        return dict(self.nat).get(host)

    def namespace(self, host: str) -> str:
        self._place(host)  # a typed error for an unknown host
        return f"{PREFIX}{self.name}-{host}"

    def router_namespace(self, host: str) -> str:
        """The namespace of the host's home router (which holds its lab address and uplink)."""
        if not self.nat_kind(host):
            raise LabError(f"{host} is not behind NAT in lab {self.name}")
        return self.namespace(host) + ROUTER_SUFFIX

    def wire_namespace(self, host: str) -> str:
        """Where the host's end of the wire (its TUN device) lives: its router's namespace, or its own."""
        return self.router_namespace(host) if self.nat_kind(host) else self.namespace(host)

    def _place(self, host: str) -> int:
        try:
            return self.hosts.index(host) + 1
        except ValueError:
            raise LabError(f"no host {host!r} in lab {self.name} (hosts: {', '.join(self.hosts)})") from None

    def rtt(self, a: str, b: str) -> float:
        """The configured round trip between two hosts, in ms (an override, else the lab's default)."""
        pair = tuple(sorted((a, b)))
        return next((rtt for x, y, rtt in self.link_rtt_ms if (x, y) == pair), self.rtt_ms)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "hosts": self.hosts, "rtt_ms": self.rtt_ms, "mbit": self.mbit,
                           "jitter_ms": self.jitter_ms, "link_rtt_ms": self.link_rtt_ms, "nat": self.nat})

    @classmethod
    def from_json(cls, text: str) -> "LabSpec":
        d = json.loads(text)
        links = {frozenset((a, b)): rtt for a, b, rtt in d["link_rtt_ms"]}
        return cls.build(d["hosts"], d["rtt_ms"], d["mbit"], d["jitter_ms"], links, d["name"], dict(d["nat"]))
