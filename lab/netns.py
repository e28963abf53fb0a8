"""Network namespaces joined by veths (point to point, or on a bridge), and the private mount namespace
that makes a namespace a host: a shell script binds per-host directories over system paths and then
execs the process that anchors both namespaces (the supervisor, or `sleep infinity`).

Only addresses in 198.18.0.0/15 are configured, by the callers."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from lab.proc import LabError, sh

# a master's root has Debian's default ~/.bashrc (bash reads it for ssh commands), not the runner's
# (pyenv, cargo, go on PATH)
SKEL_BASHRC = "if [ -f /etc/skel/.bashrc ] && [ -f /root/.bashrc ]; then mount --bind /etc/skel/.bashrc /root/.bashrc; fi"


def add(ns: str, error: type[Exception] = LabError) -> None:
    sh("ip", "netns", "add", ns, error=error)
    sh("ip", "-n", ns, "link", "set", "lo", "up", error=error)


def names(prefix: str = "") -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0].startswith(prefix)]


def pids(ns: str) -> list[int]:
    p = sh("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()] if p.returncode == 0 else []


def delete(ns: str) -> None:
    sh("ip", "netns", "del", ns, check=False)


def delete_link(name: str) -> None:
    if sh("ip", "link", "show", name, check=False).returncode == 0:
        sh("ip", "link", "del", name, check=False)


@dataclass(frozen=True)
class End:
    """One end of a veth: its namespace (None: the runner's), name, address (CIDR) and bridge."""

    ns: str | None
    ifname: str
    address: str | None = None
    bridge: str | None = None

    def ip(self, *args: str) -> list[str]:
        return ["ip", *(("-n", self.ns) if self.ns else ()), *args]


def veth(a: End, b: End, error: type[Exception] = LabError) -> None:
    sh(*a.ip("link", "add", a.ifname, "type", "veth", "peer", "name", b.ifname, *(("netns", b.ns) if b.ns else ())),
       error=error)
    for end in (a, b):
        if end.bridge:
            sh(*end.ip("link", "set", end.ifname, "master", end.bridge), error=error)
        if end.address:
            sh(*end.ip("addr", "add", end.address, "dev", end.ifname), error=error)
        sh(*end.ip("link", "set", end.ifname, "up"), error=error)


def bridge(ns: str, name: str = "br0", error: type[Exception] = LabError) -> None:
    sh("ip", "-n", ns, "link", "add", name, "type", "bridge", error=error)
    sh("ip", "-n", ns, "link", "set", name, "up", error=error)


def write_init(path: Path, mounts: list[tuple[str, str]], command: str, *, hostname: str | None = None,
               before: list[str] = ()) -> None:
    """The script the anchor runs in its new mount namespace: `before` lines, then each (source, mount
    point) bound recursively, Debian's ~/.bashrc for root, the hostname (UTS namespace), then exec."""
    lines = ["set -e", *before]
    lines += [f"mount --rbind {shlex.quote(src)} {shlex.quote(mp)}" for src, mp in mounts]
    lines.append(SKEL_BASHRC)
    if hostname:
        lines.append(f"hostname {shlex.quote(hostname)}")
    lines.append(f"exec {command}")
    path.write_text("\n".join(lines) + "\n")


def anchor_argv(ns: str, init: Path, *, uts: bool = False) -> list[str]:
    """The command that runs `init` in network namespace ns and a new private mount (and UTS) namespace."""
    return ["ip", "netns", "exec", ns, "unshare", "-m", *(["-u"] if uts else []), "--propagation", "private", "--",
            "sh", str(init)]


def enter_argv(anchor_pid: int | str, *, uts: bool = False) -> list[str]:
    """The prefix that runs a command in the anchor's network + mount (and UTS) namespaces."""
    return ["nsenter", "-t", str(anchor_pid), "-m", "-n", *(["-u"] if uts else []), "--"]
