"""Hosts of their own on this machine: Linux network namespaces on a private bridge.

    with PrivateNetwork() as net:              # a /24 of 10.x.y free on this machine
        s3 = net.host("s3")                    # a namespace, its eth0 at 10.x.y.2 on the bridge
        subprocess.Popen(s3.command("moto_server", "-H", s3.address, "-p", "9000"))
        net.address                            # 10.x.y.1: the root namespace's side
        s3.cut()                               # its link down: nothing in or out
        s3.restore()                           # and up again

Each host is a namespace with one veth pair: its end is ``eth0`` inside, the
other is a port of the run's bridge in the root namespace, which holds the
first address of the /24. Hosts reach each other and the root namespace
over the bridge; nothing else (no route out, no NAT). Services of the
root namespace bound to ``net.address`` are theirs to reach.

Names carry a random suffix and the /24 is picked at random among those
no address or route of this machine touches, so two runs at once do not
collide. Everything is removed on exit, even after a failure: processes
still running inside the namespaces (started by the test: they are its
own), the namespaces, the veth pairs and the bridge.

``unavailable()`` says why namespaces cannot be made here (not root, no
``ip``), for a skip; ``NamespacesUnavailable`` is raised when the kernel
refuses the first namespace (a container without the capability). Any
other failure is an error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

IP = "ip"


class NamespacesUnavailable(RuntimeError):
    """The kernel refused to make a network namespace here."""


def unavailable() -> str | None:
    """Why network namespaces cannot be made on this machine, or ``None`` if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add), and this run is not root"
    if shutil.which(IP) is None:
        return "network namespaces need iproute2's `ip` command, which is not installed"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces (/proc/self/ns/net is missing)"
    return None


def ip(*args: str) -> str:
    """Run ``ip ARGS``; its output, or ``RuntimeError`` with its message."""
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass
class Host:
    """One namespace on the bridge."""

    name: str
    netns: str
    address: str
    outside: str  # the veth's end in the root namespace, a port of the bridge

    def command(self, *argv: str | os.PathLike[str]) -> list[str]:
        """``argv`` run inside this host's namespace (``ip netns exec`` execs it: same pid)."""
        return [IP, "netns", "exec", self.netns, *(str(part) for part in argv)]

    def cut(self) -> None:
        """Its link down, on its own side: it can neither send nor receive."""
        ip("-n", self.netns, "link", "set", "eth0", "down")

    def restore(self) -> None:
        ip("-n", self.netns, "link", "set", "eth0", "up")

    def url(self, port: int) -> str:
        return f"http://{self.address}:{port}"


@dataclass
class PrivateNetwork:
    """A bridge and its /24 in the root namespace; ``host()`` adds a namespace to it."""

    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    network: ipaddress.IPv4Network | None = None
    hosts: list[Host] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"smib{self.suffix}"  # at most 15 characters, as Linux wants

    @property
    def address(self) -> str:
        """The root namespace's address on the bridge."""
        assert self.network is not None
        return str(self.network.network_address + 1)

    def __enter__(self) -> PrivateNetwork:
        try:
            ip("link", "add", self.bridge, "type", "bridge")
        except RuntimeError as exc:
            if "not permitted" in str(exc).lower():
                raise NamespacesUnavailable(f"cannot make a bridge here: {exc}") from exc
            raise
        try:
            self.network = _claim_subnet(self.bridge)
            ip("link", "set", self.bridge, "up")
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove()

    def host(self, name: str) -> Host:
        """A new namespace with ``eth0`` on the bridge at the next address of the /24."""
        assert self.network is not None
        index = len(self.hosts) + 1
        address = str(self.network.network_address + 1 + index)
        netns = f"smi-{self.suffix}-{name}"
        try:
            ip("netns", "add", netns)
        except RuntimeError as exc:
            if "not permitted" in str(exc).lower() and not self.hosts:
                raise NamespacesUnavailable(f"cannot make a network namespace: {exc}") from exc
            raise
        host = Host(name, netns, address, outside=f"smi{self.suffix}h{index}")
        self.hosts.append(host)
        inside = f"smi{self.suffix}n{index}"
        ip("link", "add", host.outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", netns)
        ip("link", "set", host.outside, "master", self.bridge, "up")
        ip("-n", netns, "link", "set", inside, "name", "eth0")
        ip("-n", netns, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", "eth0")
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "link", "set", "eth0", "up")
        return host

    def _remove(self) -> None:
        """Processes inside the namespaces, the namespaces (with their veths), the bridge."""
        problems: list[str] = []
        for host in reversed(self.hosts):
            _end_processes_in(host.netns)
            for args in (("netns", "delete", host.netns), ("link", "delete", host.outside)):
                with contextlib.suppress(RuntimeError):
                    ip(*args)
        with contextlib.suppress(RuntimeError):
            ip("link", "delete", self.bridge)
        left = ip("-o", "link", "show")
        if self.suffix in left:
            problems.append(f"links left: {left}")
        if any(host.netns in ip("netns", "list") for host in self.hosts):
            problems.append("namespaces left")
        if problems:
            raise RuntimeError(f"could not remove the test network: {'; '.join(problems)}")


def _end_processes_in(netns: str) -> None:
    """SIGKILL whatever still runs in ``netns`` (the test started it) and wait for it."""
    try:
        pids = [int(pid) for pid in ip("netns", "pids", netns).split()]
    except RuntimeError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        time.sleep(0.05)


def _claim_subnet(bridge: str) -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no address or route here touches, given to ``bridge``.

    Checked again once ours is in place: a run that picked the same /24 at the
    same moment shows as a second route, and one of us (both, at worst) tries again.
    """
    for _ in range(50):
        candidate = ipaddress.ip_network(
            f"10.{random.randint(16, 254)}.{random.randint(0, 255)}.0/24"
        )
        if any(candidate.overlaps(used) for used, _ in _in_use()):
            continue
        address = f"{candidate.network_address + 1}/{candidate.prefixlen}"
        ip("addr", "add", address, "dev", bridge)
        others = [dev for used, dev in _in_use() if candidate.overlaps(used) and dev != bridge]
        if not others:
            return candidate
        ip("addr", "del", address, "dev", bridge)
        time.sleep(random.random())
    raise RuntimeError("no free 10.x.y.0/24 found for the test network")


def _in_use() -> list[tuple[ipaddress.IPv4Network, str]]:
    """Every IPv4 network this machine's addresses and routes (all tables) cover."""
    found: list[tuple[ipaddress.IPv4Network, str]] = []
    for entry in json.loads(ip("-j", "-4", "addr", "show") or "[]"):
        for info in entry.get("addr_info", []):
            network = f"{info['local']}/{info['prefixlen']}"
            found.append((ipaddress.ip_network(network, strict=False), entry["ifname"]))
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        destination = route.get("dst", "")
        if destination in ("", "default") or route.get("type") in ("broadcast", "local"):
            continue
        with contextlib.suppress(ValueError):
            found.append((ipaddress.ip_network(destination, strict=False), route.get("dev", "")))
    return found
