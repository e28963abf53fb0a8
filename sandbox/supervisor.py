"""The sandbox masters' service manager for kube-apiserver: what systemd does on a binary install.

    python3 supervisor.py <hostdir> <kube-apiserver binary> <env file> [VAR]

Runs inside the master's network + mount namespaces (it is the process that anchors them) and keeps one
kube-apiserver running as a unit with `EnvironmentFile=<env file>` and
`ExecStart=<binary> $KUBE_APISERVER_OPTS` would:
  * SIGHUP = `systemctl restart kube-apiserver`: stop the process (SIGTERM, then SIGKILL after 20 s), re-read
    the env file, start it again; <hostdir>/generation counts starts (the restart command waits for it);
  * a process that exits on its own is started again after 2 s (Restart=on-failure, RestartSec=2), so a
    bad flag shows as an apiserver that never becomes ready, as under systemd; <hostdir>/crashes counts these;
  * an env file that does not parse is logged and retried, like systemd refusing to start the unit;
  * SIGTERM stops kube-apiserver and the supervisor.
Its log (<hostdir>/kube-apiserver.log) is what the master's `journalctl -u kube-apiserver` shim prints.
<hostdir>/events.jsonl has the same transitions with millisecond wall-clock times (time.time()), one JSON
object a line, for bench/rollout.py --sandbox: {"t", "event", "generation"} with event one of
  restart (SIGHUP received), stop (SIGTERM sent to the running apiserver), killed (SIGKILL sent after
  STOP_TIMEOUT), stopped (it exited), started (the new process was spawned), exited (it exited on its own), start-failed (bad env file).
Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

RESTART_SEC = 2.0
STOP_TIMEOUT = 20.0


class BadEnvFile(Exception):
    pass


def env_file_args(text: str, var: str) -> list[str]:
    """systemd EnvironmentFile= semantics, close enough: shell-style quoting, backslash-newline
    continuations; `$VAR` unquoted on ExecStart= splits the value at whitespace."""
    text = re.sub(r"\\\n", "", text)
    try:
        words = shlex.split(text, comments=True, posix=True)
    except ValueError as e:
        raise BadEnvFile(f"Failed to parse environment file: {e}") from None
    values = {}
    for w in words:
        if w == "export":  # `export NAME=value` (shell style): the assignment is the next word
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", w, re.S)
        if not m:
            raise BadEnvFile(f"Ignoring invalid environment assignment {w[:40]!r}")
        values[m.group(1)] = m.group(2)
    if var not in values:
        raise BadEnvFile(f"environment file does not set {var}")
    return values[var].split()


def main(argv: list[str]) -> int:
    hostdir, binary, env_file = Path(argv[0]), argv[1], Path(argv[2])
    var = argv[3] if len(argv) > 3 else "KUBE_APISERVER_OPTS"
    want = {"restart": False, "stop": False}
    hup_at: list[float] = []  # when each SIGHUP arrived (for events.jsonl)

    def on_hup(*_) -> None:
        hup_at.append(time.time())
        want["restart"] = True

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, lambda *_: want.__setitem__("stop", True))
    signal.signal(signal.SIGINT, lambda *_: want.__setitem__("stop", True))
    log = open(hostdir / "kube-apiserver.log", "ab", buffering=0)  # noqa: SIM115
    events = open(hostdir / "events.jsonl", "ab", buffering=0)  # noqa: SIM115
    child: subprocess.Popen | None = None

    def note(msg: str) -> None:
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {msg}\n".encode())

    counters = {"generation": 0, "crashes": 0}

    def event(kind: str, t: float | None = None) -> None:
        rec = {"t": round(time.time() if t is None else t, 3), "event": kind, "generation": counters["generation"]}
        events.write((json.dumps(rec) + "\n").encode())

    def bump(name: str) -> None:
        counters[name] += 1
        tmp = hostdir / f"{name}.tmp"
        tmp.write_text(str(counters[name]))
        os.replace(tmp, hostdir / name)

    def start(crashed: bool = False) -> subprocess.Popen | None:
        bump("crashes" if crashed else "generation")
        try:
            args = env_file_args(env_file.read_text(), var)
        except (OSError, BadEnvFile) as e:
            note(f"kube-apiserver.service: {e}")
            event("start-failed")
            return None
        note(f"Started kube-apiserver: {' '.join(args)}")
        p = subprocess.Popen([binary, *args], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        event("started")
        return p

    def stop(p: subprocess.Popen | None) -> None:
        if p is None or p.poll() is not None:
            return
        event("stop")
        p.terminate()
        try:
            p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            event("killed")
            p.kill()
            p.wait(5)
        note("Stopped kube-apiserver")
        event("stopped")

    (hostdir / "supervisor.pid").write_text(str(os.getpid()))
    child = start()
    failed_at: float | None = None
    while not want["stop"]:
        time.sleep(0.05)
        if want["restart"]:
            want["restart"] = False
            while hup_at:
                event("restart", hup_at.pop(0))
            stop(child)
            child, failed_at = start(), None
            continue
        if child is None or child.poll() is not None:
            if failed_at is None:
                failed_at = time.monotonic()
                if child is not None:
                    note(f"kube-apiserver exited with status {child.returncode}; restarting in {RESTART_SEC:.0f}s")
                    event("exited")
            elif time.monotonic() - failed_at >= RESTART_SEC:
                child, failed_at = start(crashed=True), None
    stop(child)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
