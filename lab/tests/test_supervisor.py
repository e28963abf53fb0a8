"""lab/supervisor.py and lab/shims run for real, without namespaces or root: a stand-in "binary" that
records its arguments, driven by signals, the shims and a watched file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.proc import wait_for
from lab.supervisor import SETTINGS, Unit, install_shims

pytestmark = pytest.mark.timeout(60)

# the "binary": writes its generation and arguments, then runs until stopped (or exits when told to)
FAKE = f"""#!{sys.executable}
import json, os, sys, time
d = os.environ["FAKE_DIR"]
with open(os.path.join(d, "runs.jsonl"), "a") as f:
    f.write(json.dumps({{"generation": os.environ["LAB_GENERATION"], "args": sys.argv[1:]}}) + "\\n")
if "--exit" in sys.argv:
    sys.exit(3)
time.sleep(3600)
"""


class Host:
    def __init__(self, d: Path):
        self.dir = d

    def runs(self) -> list[dict]:
        f = self.dir / "runs.jsonl"
        return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []

    def events(self) -> list[str]:
        f = self.dir / "events.jsonl"
        return [json.loads(x)["event"] for x in f.read_text().splitlines()] if f.exists() else []

    def counter(self, name: str) -> int:
        f = self.dir / name
        return int(f.read_text()) if f.exists() else 0


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen] = []
    binary = tmp_path / "kube-apiserver"
    binary.write_text(FAKE)
    binary.chmod(0o755)

    def start(env_text: str | None = 'KUBE_APISERVER_OPTS="--a=1 \\\n --b=2"\n', **unit) -> Host:
        if env_text is not None:
            (tmp_path / "kube-apiserver.conf").write_text(env_text)
        unit.setdefault("binary", str(binary))
        unit.setdefault("env_file", str(tmp_path / "kube-apiserver.conf"))
        Unit(**unit).write(tmp_path)
        env = {**os.environ, "FAKE_DIR": str(tmp_path)}
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "supervisor.py"), str(tmp_path)],
                                      env=env))
        wait_for(lambda: (tmp_path / "supervisor.pid").exists(), "the supervisor", 10, 0.05)
        return Host(tmp_path)

    yield start
    for p in procs:
        p.send_signal(signal.SIGTERM)
        p.wait(30)


def test_starts_from_the_env_file_and_restarts_on_sighup(supervise, tmp_path):
    h = supervise(stop_timeout=5)
    wait_for(lambda: h.runs(), "the first start", 10, 0.05)
    assert h.runs() == [{"generation": "1", "args": ["--a=1", "--b=2"]}] and h.counter("generation") == 1
    (tmp_path / "kube-apiserver.conf").write_text('KUBE_APISERVER_OPTS="--a=1 --c=3"\n')
    os.kill(int((tmp_path / "supervisor.pid").read_text()), signal.SIGHUP)
    wait_for(lambda: len(h.runs()) == 2, "the restart", 10, 0.05)
    assert h.runs()[1] == {"generation": "2", "args": ["--a=1", "--c=3"]} and h.counter("generation") == 2
    assert h.events() == ["started", "restart", "stop", "stopped", "started"]


def test_bad_env_file_fails_the_start_and_a_crash_is_restarted(supervise, tmp_path):
    h = supervise("OTHER=1\n", restart_sec=0.3)
    wait_for(lambda: h.counter("crashes") >= 2, "two retries", 10, 0.05)
    assert h.runs() == [] and h.counter("generation") == 1
    assert set(h.events()) == {"start-failed"}
    assert "does not set KUBE_APISERVER_OPTS" in (tmp_path / "kube-apiserver.log").read_text()


def test_without_restart_sec_an_exited_process_stays_down(supervise, tmp_path):
    h = supervise('KUBE_APISERVER_OPTS="--exit"\n', restart_sec=None)
    wait_for(lambda: "exited" in h.events(), "the exit", 10, 0.05)
    time.sleep(0.5)
    assert len(h.runs()) == 1 and h.events() == ["started", "exited"]


def test_a_changed_watched_file_restarts_after_the_delay(supervise, tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("one\n")
    h = supervise(watch=str(manifest), watch_delay=0.3, stop_timeout=5)
    wait_for(lambda: h.runs(), "the first start", 10, 0.05)
    manifest.write_text("two\n")
    wait_for(lambda: len(h.runs()) == 2, "the restart", 10, 0.05)
    reasons = [json.loads(x).get("reason") for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert "manifest-changed" in reasons and h.counter("generation") == 2


def test_shims(supervise, tmp_path):
    sbin, unit = tmp_path / "sbin", tmp_path / "kube-apiserver.service"
    sbin.mkdir()
    unit.write_text("[Service]\nExecStart=/usr/bin/kube-apiserver --v=2\n")
    install_shims(sbin, tmp_path, "m1", journal="kube-apiserver.log", unit_file=unit,
                  shims=("apiserverctl", "systemctl", "journalctl", "crictl"))
    h = supervise(stop_timeout=5)
    wait_for(lambda: h.runs(), "the first start", 10, 0.05)

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(sbin / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=30)

    assert run("apiserverctl", "restart").returncode == 0
    assert h.counter("generation") == 2  # it returned once the new process started
    assert run("apiserverctl", "status").stdout == "generation 2\n"
    assert run("apiserverctl", "stop").returncode == 2
    assert run("systemctl", "daemon-reload").returncode == 0
    assert (tmp_path / "loaded-unit").read_text() == unit.read_text() and h.events()[-1] == "daemon-reload"
    assert run("systemctl", "restart", "kube-apiserver.service").returncode == 0 and h.counter("generation") == 3
    assert run("systemctl", "stop", "kube-apiserver").returncode == 1
    journal = run("journalctl", "-u", "kube-apiserver", "-n", "2").stdout.splitlines()
    assert len(journal) == 2 and all(x.startswith("m1 kube-apiserver[journal]: ") for x in journal)
    assert run("crictl", "ps").stdout == f"standin{(tmp_path / 'child.pid').read_text()}\n"
    assert SETTINGS in os.listdir(tmp_path)
