"""A host's service manager for kube-apiserver: what systemd (or, for a static pod, the kubelet) does on
a master. One implementation for the host tier's stand-in and the sandbox's real kube-apiserver.

    python3 lab/supervisor.py <hostdir>         (settings: <hostdir>/supervisor.json, Unit below)

Runs inside the host's network + mount namespaces (it is the process that anchors them) and keeps one
apiserver process running:
  * the command is fixed (`command`), or, as a unit with `EnvironmentFile=<env_file>` and
    `ExecStart=<binary> $<env_var>` would run it, re-read from the env file at every start; an env file
    that does not parse is logged and the start fails (event start-failed), as systemd refuses the unit;
  * SIGHUP = `systemctl restart kube-apiserver` (the apiserverctl shim sends it): stop the process
    (SIGTERM, SIGKILL after `stop_timeout`), start it again; <hostdir>/generation counts starts, which
    the restart command waits for;
  * `watch`: a file whose change restarts the process `watch_delay` seconds later (the kubelet acting
    on a changed static-pod manifest);
  * `restart_sec`: a process that exits on its own is started again after that long (Restart=on-failure;
    <hostdir>/crashes counts these); None: it stays down, as a crashed static pod the tests observe;
  * SIGTERM stops the process and the supervisor.
The process's output and the supervisor's notes go to <hostdir>/<log>. <hostdir>/events.jsonl has the
transitions, one JSON object a line {"t": wall clock, "event", "generation", ...}: restart (requested;
"reason"), stop (SIGTERM sent), killed (SIGKILL sent), stopped, started ("pid"), exited ("code"),
start-failed; the stand-in and the systemctl shim append theirs to the same file.
The child gets its generation in LAB_GENERATION; <hostdir>/child.pid is its pid. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SETTINGS = "supervisor.json"
SHIMS_DIR = Path(__file__).resolve().parent / "shims"


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


@dataclass
class Unit:
    """What the supervisor runs and how (written to <hostdir>/supervisor.json by the lab)."""

    command: list[str] | None = None  # a fixed command line, or:
    binary: str | None = None  # ExecStart=<binary> $<env_var> with EnvironmentFile=<env_file>
    env_file: str | None = None
    env_var: str = "KUBE_APISERVER_OPTS"
    log: str = "kube-apiserver.log"
    stop_timeout: float = 20.0
    restart_sec: float | None = 2.0
    watch: str | None = None
    watch_delay: float = 0.2

    def write(self, hostdir: Path) -> None:
        (hostdir / SETTINGS).write_text(json.dumps(asdict(self)))

    def argv(self) -> list[str]:
        if self.command is not None:
            return list(self.command)
        assert self.binary and self.env_file
        try:
            text = Path(self.env_file).read_text()
        except OSError as e:
            raise BadEnvFile(str(e)) from None
        return [self.binary, *env_file_args(text, self.env_var)]


def install_shims(sbin: Path, hostdir: Path, name: str, *, journal: str, shims: tuple[str, ...],
                  unit_file: Path | None = None, restart_wait: float = 60) -> None:
    """The host's /usr/local/sbin (first on root's and sudo's PATH): each shim of lab/shims with this host's
    settings (<hostdir>/shims.env): `journal` is the log that journalctl prints, `unit_file` (runner-side
    path) what `systemctl daemon-reload` loads, `restart_wait` how long apiserverctl waits for the start."""
    settings = {"LAB_HOST_DIR": str(hostdir), "LAB_HOST_NAME": name, "LAB_JOURNAL": str(hostdir / journal),
                "LAB_UNIT_FILE": str(unit_file or ""), "LAB_RESTART_WAIT": str(int(restart_wait * 20))}
    (hostdir / "shims.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items()))
    for shim in shims:
        target = sbin / shim
        target.write_text(f"#!/bin/sh\n# {shim} of lab host {name}: {SHIMS_DIR / shim}\n"
                          f"exec bash {shlex.quote(str(SHIMS_DIR / shim))} {shlex.quote(str(hostdir))} \"$@\"\n")
        os.chmod(target, 0o755)


def main(hostdir: Path) -> int:
    unit = Unit(**json.loads((hostdir / SETTINGS).read_text()))
    want = {"restart": False, "stop": False}
    hup_at: list[float] = []  # when each SIGHUP arrived (for events.jsonl)

    def on_hup(*_) -> None:
        hup_at.append(time.time())
        want["restart"] = True

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, lambda *_: want.__setitem__("stop", True))
    signal.signal(signal.SIGINT, lambda *_: want.__setitem__("stop", True))
    log = open(hostdir / unit.log, "ab", buffering=0)  # noqa: SIM115
    counters = {"generation": 0, "crashes": 0}

    def note(msg: str) -> None:
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {msg}\n".encode())

    def event(kind: str, t: float | None = None, **extra) -> None:
        rec = {"t": time.time() if t is None else t, "event": kind, "generation": counters["generation"], **extra}
        with open(hostdir / "events.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def bump(name: str) -> None:
        counters[name] += 1
        tmp = hostdir / f"{name}.tmp"
        tmp.write_text(str(counters[name]))
        os.replace(tmp, hostdir / name)

    def start(crashed: bool = False) -> subprocess.Popen | None:
        try:
            argv = unit.argv()
        except BadEnvFile as e:
            bump("crashes" if crashed else "generation")
            note(f"kube-apiserver.service: {e}")
            event("start-failed")
            return None
        note(f"Started kube-apiserver: {' '.join(argv[1:])}")
        env = {**os.environ, "LAB_GENERATION": str(counters["generation"] + (0 if crashed else 1))}
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        (hostdir / "child.pid").write_text(str(p.pid))
        bump("crashes" if crashed else "generation")
        event("started", pid=p.pid)
        return p

    def stop(p: subprocess.Popen | None) -> None:
        if p is None or p.poll() is not None:
            return
        event("stop")
        p.terminate()
        try:
            p.wait(unit.stop_timeout)
        except subprocess.TimeoutExpired:
            event("killed")
            p.kill()
            p.wait(5)
        note("Stopped kube-apiserver")
        event("stopped")

    def watched() -> str:
        try:
            return hashlib.sha256(Path(unit.watch).read_bytes()).hexdigest() if unit.watch else ""
        except OSError:
            return ""

    seen = watched()
    (hostdir / "supervisor.pid").write_text(str(os.getpid()))
    child = start()
    failed_at: float | None = None
    while not want["stop"]:
        time.sleep(0.05)
        restart = False
        if want["restart"]:
            want["restart"] = False
            while hup_at:
                event("restart", hup_at.pop(0), reason="restart")
            restart = True
        elif unit.watch and watched() != seen:
            time.sleep(unit.watch_delay)  # the kubelet notices and syncs the pod, then restarts it
            event("restart", reason="manifest-changed")
            seen, restart = watched(), True
        if restart:
            stop(child)
            child, failed_at = start(), None
            continue
        if child is None or child.poll() is not None:
            if failed_at is None:
                failed_at = time.monotonic()
                if child is not None:
                    note(f"kube-apiserver exited with status {child.returncode}"
                         + ("" if unit.restart_sec is None else f"; restarting in {unit.restart_sec:.0f}s"))
                    event("exited", code=child.returncode)
            elif unit.restart_sec is not None and time.monotonic() - failed_at >= unit.restart_sec:
                child, failed_at = start(crashed=True), None
    stop(child)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
