"""Commands, waits and processes: the helpers every part of the lab uses (standard library only: the
sandbox daemons import it inside namespaces)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class LabError(Exception):
    pass


def sh(*args: str, check: bool = True, timeout: float = 30, error: type[Exception] = LabError,
       **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise error(f"{' '.join(args)} -> {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def wait_for(pred: Callable[[], object], what: str, timeout: float, interval: float = 0.2,
             error: type[Exception] = LabError):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def tcp_open(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_pid(pid: int | None, sig: int = signal.SIGTERM) -> None:
    if not pid:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after "(comm)" (which may hold spaces): [0] is field 3 (state), [1] the
    ppid, [19] field 22 (the start time in clock ticks since boot). OSError when there is no such process."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def gone(pid: int) -> bool:
    """The process is gone, or exited and not yet reaped by whoever started it."""
    try:
        return stat_fields(pid)[0] == "Z"
    except (OSError, IndexError):
        return True


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(stat_fields(int(d.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d.name))
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal pid and every process below it, found by parent id (not by process group: the Pulumi CLI
    starts each plugin in a process group of its own, so killpg on the CLI leaves its plugins running with
    init as their parent). The descendants are listed first and signalled leaves first, so none is
    re-parented out of reach in between. -> the pids signalled."""
    pids = [pid]
    i = 0
    while i < len(pids) and i < 10_000:
        pids += children_of(pids[i])
        i += 1
    for p in reversed(pids):
        kill_pid(p, sig)
    return pids


def run_tree(argv: list[str], *, timeout: float, **kw) -> subprocess.CompletedProcess:
    """subprocess.run(argv, capture_output=True, text=True, timeout=timeout), except that a timeout (or any
    interruption, such as pytest-timeout's) kills the whole process tree, not only argv's process: the
    Pulumi CLI's plugins, each in a process group of its own, would otherwise outlive it (kill_tree)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except BaseException:
        kill_tree(p.pid)
        p.communicate(timeout=10)
        raise
    return subprocess.CompletedProcess(argv, p.returncode, stdout, stderr)


def keygen(path: Path, comment: str, error: type[Exception] = LabError) -> str:
    """An ed25519 key pair at path (made once); -> its public key as `type base64`."""
    if not path.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path), error=error)
    os.chmod(path, 0o600)
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])
