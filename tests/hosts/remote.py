"""Execute the remote.Command steps the program built (tests.support.program `Run.commands`) over real SSH.

The engine's behaviour, reduced to what the host tier needs:
  * `up`: each command's `create` (or `update` with update=True) starts as soon as every command in its
    `depends_on` succeeded; independent commands run in parallel, as the Pulumi engine runs them; a
    failure stops its dependents (they are reported as skipped);
  * `destroy`: each command's `delete` runs after every command that depends on it was deleted;
  * the command string is sent as is (ssh joins nothing: one argument), `stdin` is fed on stdin, and
    the connection (host, port, user, privateKey, hostKey, proxy) is honoured with the system ssh client.
Nothing here builds or edits a command line.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Result:
    name: str
    rc: int | None  # None: skipped (a dependency failed)
    stdout: str = ""
    stderr: str = ""
    start: float = 0.0
    end: float = 0.0


@dataclass
class Outcome:
    results: dict[str, Result] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # completion order

    @property
    def ok(self) -> bool:
        return all(r.rc == 0 for r in self.results.values())

    def failed(self) -> list[Result]:
        return [r for r in self.results.values() if r.rc not in (0, None)]

    def skipped(self) -> list[str]:
        return [r.name for r in self.results.values() if r.rc is None]

    def __getitem__(self, name: str) -> Result:
        return self.results[name]

    def explain(self) -> str:
        return "\n".join(
            f"--- {r.name}: rc={r.rc}\n{r.stdout}{r.stderr}" for r in self.results.values()
        )


class SshRunner:
    def __init__(self, workdir: Path, known_hosts: Path, timeout: float = 180):
        self.workdir = workdir
        self.known_hosts = known_hosts
        self.timeout = timeout
        self._keys: dict[str, Path] = {}
        self._lock = threading.Lock()

    def _keyfile(self, pem: str) -> Path:
        with self._lock:
            if pem not in self._keys:
                path = self.workdir / f"client-key-{len(self._keys)}"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(pem)
                self._keys[pem] = path
            return self._keys[pem]

    def _known_hosts_for(self, conn: dict) -> Path:
        """The pinned hostKey of the connection when the program set one, else the lab's known_hosts."""
        if not conn.get("hostKey"):
            return self.known_hosts
        path = self.workdir / f"known-{conn['host']}-{int(conn.get('port') or 22)}"
        path.write_text(f"[{conn['host']}]:{int(conn.get('port') or 22)} {conn['hostKey']}\n{conn['host']} {conn['hostKey']}\n")
        return path

    def _base(self, conn: dict) -> list[str]:
        opts = [
            "-F", "/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self._known_hosts_for(conn)}",
            "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
            "-p", str(int(conn.get("port") or 22)),
        ]
        if conn.get("privateKey"):
            opts += ["-i", str(self._keyfile(conn["privateKey"]))]
        return opts

    def argv(self, conn: dict, command: str) -> list[str]:
        argv = ["ssh", *self._base(conn)]
        proxy = conn.get("proxy")
        if proxy:
            inner = ["ssh", *self._base(proxy), "-W", "%h:%p", f"{proxy.get('user') or conn['user']}@{proxy['host']}"]
            argv += ["-o", "ProxyCommand=" + " ".join(shlex.quote(a) for a in inner)]
        return argv + [f"{conn['user']}@{conn['host']}", command]

    def run(self, conn: dict, command: str, stdin: str | None = None) -> Result:
        start = time.time()
        try:
            p = subprocess.run(
                self.argv(conn, command), input=stdin if stdin is not None else "",
                capture_output=True, text=True, timeout=self.timeout,
            )
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = 124, str(e.stdout or ""), f"timed out after {self.timeout}s"
        return Result("", rc, out, err, start, time.time())

    # ---- the engine's ordering
    def up(self, commands: list[dict], *, update: bool = False, stop_at: set[str] | None = None,
           before: dict[str, callable] | None = None) -> Outcome:
        """Run `create` (or `update`) of every command, honouring depends_on, in parallel where allowed."""
        deps = {c["name"]: set(c["depends_on"]) for c in commands}
        return self._graph(commands, deps, "update" if update else "create", before or {})

    def destroy(self, commands: list[dict]) -> Outcome:
        names = {c["name"] for c in commands}
        rdeps: dict[str, set[str]] = {n: set() for n in names}
        for c in commands:
            for d in c["depends_on"]:
                if d in rdeps:
                    rdeps[d].add(c["name"])
        return self._graph(commands, rdeps, "delete", {})

    def _graph(self, commands: list[dict], deps: dict[str, set[str]], field_: str, before: dict) -> Outcome:
        by_name = {c["name"]: c for c in commands}
        out = Outcome()
        done: dict[str, bool] = {}
        cond = threading.Condition()
        running: set[str] = set()

        def work(name: str) -> None:
            c = by_name[name]
            hook = before.get(name)
            if hook:
                hook()
            r = self.run(c["connection"], c[field_] or c["create"], c.get("stdin"))
            r.name = name
            with cond:
                out.results[name] = r
                out.order.append(name)
                done[name] = r.rc == 0
                running.discard(name)
                cond.notify_all()

        deadline = time.monotonic() + self.timeout * (len(commands) + 1)
        with cond:
            while len(done) < len(commands):
                progressed = False
                for name, ds in deps.items():
                    if name in done or name in running:
                        continue
                    ds = ds & set(by_name)
                    if any(d in done and not done[d] for d in ds):
                        done[name] = False
                        out.results[name] = Result(name, None)
                        progressed = True
                    elif all(done.get(d) for d in ds):
                        running.add(name)
                        threading.Thread(target=work, args=(name,), daemon=True).start()
                        progressed = True
                if not progressed:
                    if not running:
                        raise RuntimeError(f"dependency cycle or unknown dependency among {sorted(set(by_name) - set(done))}")
                    if not cond.wait(timeout=max(0.1, deadline - time.monotonic())):
                        raise RuntimeError("the rollout did not finish in time")
        return out
