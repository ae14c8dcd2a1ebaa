"""A network namespace joined to this one by a veth pair: a field link the tests can cut
without touching the processes on either end.

The pair gets a /30 from 198.18.0.0/15 (RFC 2544, reserved for benchmark networks and never
routed): the addresses exist only on the test's own veth pair and vanish with it. Cutting
the link sets the namespace end down, so the host end loses carrier and packets to the
field are dropped silently, like a pulled cable or a dead radio link: nothing is reset,
established connections simply stop getting answers.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

_BENCH_NET = ipaddress.IPv4Network("198.18.0.0/15")


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=10)


@dataclass(frozen=True)
class NetnsLink:
    name: str
    #: this side's end and address
    host_if: str
    host_ip: str
    #: the namespace's end and address (the field devices listen here)
    field_if: str
    field_ip: str

    @property
    def prefix(self) -> list[str]:
        """Run a command inside the namespace: `[*link.prefix, "python", ...]`."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        _ip("link", "set", self.field_if, "down", netns=self.name)

    def restore(self) -> None:
        _ip("link", "set", self.field_if, "up", netns=self.name)


def netns_unavailable() -> str | None:
    """Why this machine cannot make network namespaces (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"mgms-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        return f"`ip netns add` is not permitted here: {detail}"
    _ip("netns", "del", probe)
    return None


@contextmanager
def netns_link(index: int = 0) -> Iterator[NetnsLink]:
    """A fresh namespace and veth pair, removed afterwards (skips where not permitted)."""
    why = netns_unavailable()
    if why is not None:
        pytest.skip(why)
    tag = f"{os.getpid() % 100000}{index}"
    subnets = 2 ** (32 - _BENCH_NET.prefixlen) // 4
    base = _BENCH_NET.network_address + 4 * ((os.getpid() * 8 + index) % subnets)
    link = NetnsLink(
        name=f"mgms-field-{tag}",
        host_if=f"mgh{tag}",
        host_ip=str(base + 1),
        field_if=f"mgf{tag}",
        field_ip=str(base + 2),
    )
    _ip("netns", "add", link.name)
    try:
        _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.field_if)
        _ip("link", "set", link.field_if, "netns", link.name)
        _ip("addr", "add", f"{link.host_ip}/30", "dev", link.host_if)
        _ip("link", "set", link.host_if, "up")
        _ip("addr", "add", f"{link.field_ip}/30", "dev", link.field_if, netns=link.name)
        _ip("link", "set", link.field_if, "up", netns=link.name)
        _ip("link", "set", "lo", "up", netns=link.name)
        yield link
    finally:
        # deleting the namespace deletes its veth end and with it the pair
        subprocess.run(["ip", "netns", "del", link.name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", link.host_if], check=False, capture_output=True)
