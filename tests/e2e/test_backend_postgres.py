"""The engine tier on the postgres DIY backend (`postgres://`): the team's shared state with locking, on a
real PostgreSQL server that this module starts itself (tools/pg_backend.py, what `make backend-up` runs)
in a temporary directory on a free loopback port, and stops at the end.

In order, on one stack over the three SSH test hosts and the control plane of test_engine (conftest's
running_scenario): the server keeps its password to itself -> `up` through postgres (state rows in the
table, no lock left) -> two concurrent `up`s: the second fails fast with the lock message while the first
runs, and changes nothing on any host -> an `up` killed mid-run leaves its lock, which refuses the next
`up` until `pulumi cancel` clears it; then `up` converges -> PostgreSQL crashes and restarts: the state is
the same and a preview has no changes -> `stack export` is a backup: the stack is removed and restored
from it -> examples/hpa-consumer's StackReference reads the outputs from this backend -> destroy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.proc import free_port, gone, kill_tree, wait_for
from tests.e2e.conftest import Scenario, consumer_reads_outputs, running_scenario
from tests.e2e.engine import PROJECT, Toolchain
from tools.pg_backend import PgBackend

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LOCK_MESSAGE = "the stack is currently locked by 1 lock(s)"
LOCKS = "SELECT key FROM pulumi_state WHERE key LIKE '%/.pulumi/locks/%' ORDER BY key"
STACK_KEY = re.compile(rf"/\.pulumi/stacks/{PROJECT}/e2e\.json$")
# harmless kube-apiserver flags: the stand-in apiservers take any flag
ONE_MASTER_FLAG = ("--audit-log-maxage", "7")
ALL_MASTERS_FLAG = ("--audit-log-maxbackup", "3")


@pytest.fixture(scope="module")
def pg() -> Iterator[PgBackend]:
    # not under pytest's tmp dir: the server runs as the `postgres` user, who cannot traverse /tmp/pytest-of-root
    d = Path(tempfile.mkdtemp(prefix="ma-pg-"))
    b = PgBackend(d, free_port())
    try:
        b.up()  # pg_ctl waits at most PG_CTL_TIMEOUT for the start
        yield b
    finally:
        try:
            if b.data.is_dir():
                b.down()
        finally:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def scenario(pg: PgBackend, toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with running_scenario(toolchain, tmp_path_factory.mktemp("pg-e2e"), backend=pg.url()) as sc:
        # every stack here is destroyed at its end, which a protected CA refuses (test_engine covers that)
        sc.stack.write_config({f"{PROJECT}:pki": {"protectCa": False}})
        yield sc


# ------------------------------------------------------------------------------------------ helpers
def _locks(pg: PgBackend) -> list[str]:
    return pg.query(LOCKS).split()


def _up(sc: Scenario, cwd: Path, log: Path) -> subprocess.Popen:
    """`pulumi up` of the scenario's stack as a team member's CLI runs it, in its own process group."""
    return subprocess.Popen(
        [str(sc.stack.pulumi_bin), "up", "--yes", "--skip-preview", "--non-interactive", "--color", "never",
         "--stack", sc.stack.name],
        cwd=cwd, env=sc.stack.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _masters_with(sc: Scenario, index: int, flag: tuple[str, str]) -> list[dict]:
    masters = [dict(m) for m in sc.stack.read_config()[f"{PROJECT}:masters"]]
    masters[index]["extraFlags"] = {flag[0]: flag[1]}
    return masters


def _hosts_snapshot(sc: Scenario) -> dict[str, tuple[bytes, int]]:
    return {h.name: (h.config_bytes(), h.restarts()) for h in sc.hosts}


def _resources(state: dict) -> list[dict]:
    return state["deployment"].get("resources") or []


# ------------------------------------------------------------------------------------------ cases
def test_the_password_stays_in_the_pgpass_file(pg):
    """Generated on first start, 0600 in the backend's dir; the server holds only a SCRAM verifier, and
    neither its log nor the backend URL carries the plaintext."""
    st = os.stat(pg.pgpass)
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, os.geteuid())
    password = pg.pgpass.read_text().strip().rsplit(":", 1)[1]
    assert len(password) >= 32
    stored = pg.query("SELECT rolpassword FROM pg_authid WHERE rolname = 'metrics_aggregation'").strip()
    assert stored.startswith("SCRAM-SHA-256$4096:") and password not in stored
    assert password not in pg.log.read_text(errors="replace")
    assert password not in pg.url() and "@127.0.0.1:" in pg.url()
    # a second `up` keeps the password (the stacks' URL and pgpass stay valid)
    pg.up()
    assert pg.pgpass.read_text().strip().rsplit(":", 1)[1] == password


def test_up_through_postgres(scenario, pg):
    s = scenario
    result, took = s.stack.up()
    s.times["up"] = took
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    keys = pg.query("SELECT key FROM pulumi_state").split()
    assert any(STACK_KEY.search(k) for k in keys), f"no checkpoint row for the stack in pulumi_state: {keys}"
    assert _locks(pg) == [], "the update's lock is still in the table"
    for h in s.hosts:
        assert h.readyz() == 200, h.name
    s.results["up"] = {k: v.value for k, v in result.outputs.items()}


def test_a_concurrent_up_fails_fast_on_the_lock_and_changes_nothing(scenario, pg):
    """A changes master 2 (m2); B, started while A holds the lock, would change master 3 (m3): B stops at
    the lock with the CLI's message before running the program, while A is still running."""
    s = scenario
    s.require("up")
    m2, m3 = s.hosts[1], s.hosts[2]
    # B: a teammate's checkout of the same stack whose change is on m3
    b_dir = s.tmp / "teammate"
    shutil.copytree(s.stack.project.dir, b_dir)
    b_cfg = b_dir / s.stack.config_file.name
    saved = s.stack.config_file.read_text()
    s.stack.write_config({f"{PROJECT}:masters": _masters_with(s, 2, ONE_MASTER_FLAG)})
    shutil.copy(s.stack.config_file, b_cfg)
    s.stack.config_file.write_text(saved)
    s.stack.write_config({f"{PROJECT}:masters": _masters_with(s, 1, ONE_MASTER_FLAG)})
    m3_before = _hosts_snapshot(s)[m3.name]

    a = _up(s, s.stack.project.dir, s.tmp / "up-a.log")
    try:
        wait_for(lambda: _locks(pg), "A's lock row", timeout=60)
        t = time.monotonic()
        b = subprocess.run(
            [str(s.stack.pulumi_bin), "up", "--yes", "--skip-preview", "--non-interactive", "--color", "never",
             "--stack", s.stack.name], cwd=b_dir, env=s.stack.env, capture_output=True, text=True, timeout=120)
        s.times["concurrent up refused"] = time.monotonic() - t
        a_running = a.poll() is None
        assert a.wait(timeout=240) == 0, (s.tmp / "up-a.log").read_text()[-3000:]
    finally:
        if a.poll() is None:
            kill_tree(a.pid)
            a.wait(timeout=30)
    assert b.returncode != 0 and LOCK_MESSAGE in b.stdout + b.stderr, (b.stdout + b.stderr)[-3000:]
    assert a_running, "A had finished before B was refused: the lock was not proven held"
    assert "m3" not in b.stdout, f"B ran steps: {b.stdout[-2000:]}"
    # A's change landed on m2; B's never reached m3 (same file, no restart)
    assert f"{ONE_MASTER_FLAG[0]}={ONE_MASTER_FLAG[1]}" in m2.config_args()
    assert _hosts_snapshot(s)[m3.name] == m3_before
    assert ONE_MASTER_FLAG[0] not in m3.running_flags()
    assert _locks(pg) == []
    s.results["concurrent"] = True


@pytest.mark.timeout(420)
def test_a_killed_up_leaves_a_lock_that_cancel_clears_and_the_next_up_converges(scenario, pg):
    s = scenario
    s.require("concurrent")
    m1 = s.hosts[0]
    apiserver = dict(s.stack.read_config()[f"{PROJECT}:apiserver"])
    apiserver["extraFlags"] = {**apiserver.get("extraFlags", {}), ALL_MASTERS_FLAG[0]: ALL_MASTERS_FLAG[1]}
    s.stack.write_config({f"{PROJECT}:apiserver": apiserver})
    restarts = m1.restarts()
    log = s.tmp / "up-killed.log"
    p = _up(s, s.stack.project.dir, log)
    try:
        # mid-run: the rollout has restarted the first master (and has two to go)
        wait_for(lambda: m1.restarts() > restarts or p.poll() is not None, "m1's restart by the rollout", timeout=180)
        assert p.poll() is None, f"the up ended before it could be killed:\n{log.read_text()[-3000:]}"
    finally:
        # the CLI, the language host and the providers (each plugin in a process group of its own)
        killed = kill_tree(p.pid)
        p.wait(timeout=30)
    wait_for(lambda: all(gone(pid) for pid in killed), "the end of the killed up's plugins", timeout=10)
    locks = _locks(pg)
    assert len(locks) == 1, f"the killed up left {locks}"

    # the lock refuses the next up (the CLI names `pulumi cancel`), and changes nothing
    before = _hosts_snapshot(s)
    with pytest.raises(RuntimeError) as refused:
        s.stack.cli("up", "--yes", "--skip-preview", "--non-interactive")
    assert LOCK_MESSAGE in str(refused.value) and "pulumi cancel" in str(refused.value), str(refused.value)[-2000:]
    assert _hosts_snapshot(s) == before

    s.stack.cli("cancel", "--yes")
    assert _locks(pg) == []
    result, took = s.stack.up()
    s.times["up after cancel"] = took
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    for h in s.hosts:
        assert h.running_flags().get(ALL_MASTERS_FLAG[0]) == ALL_MASTERS_FLAG[1], h.name
        assert h.readyz() == 200, h.name
    s.results["converged"] = True


def test_state_survives_a_postgres_crash_and_restart(scenario, pg):
    s = scenario
    s.require("converged")
    before = json.loads(s.stack.cli("stack", "export"))
    pg.kill()  # immediate: no shutdown checkpoint, WAL recovery on start
    assert not pg.running()
    pg.up()
    after = json.loads(s.stack.cli("stack", "export"))
    assert _resources(after) == _resources(before)
    result, _events, took = s.stack.preview()
    s.times["preview (no changes)"] = took
    assert set(result.change_summary) == {"same"}, f"{result.change_summary}\n{result.stdout[-3000:]}"
    s.results["restarted"] = True


def test_stack_export_restores_a_removed_stack(scenario, pg):
    """The backup of docs/backends.md: `stack export` to a file; the stack is removed from the database
    (config kept, as a checkout keeps it) and restored with `stack init` + `stack import`."""
    s = scenario
    s.require("restarted")
    backup = s.tmp / "backup.json"
    backup.write_text(s.stack.cli("stack", "export"))
    decrypted = _resources(json.loads(s.stack.cli("stack", "export", "--show-secrets")))
    s.stack.cli("stack", "rm", "--yes", "--force", "--preserve-config")
    assert not any(STACK_KEY.search(k) for k in pg.query("SELECT key FROM pulumi_state").split())
    p = subprocess.run([str(s.stack.pulumi_bin), "stack", "init", s.stack.name, "--secrets-provider", "passphrase"],
                       cwd=s.stack.project.dir, env=s.stack.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    s.stack.cli("stack", "import", "--file", str(backup))
    # the same resources and values (the import encrypts the secrets again: new ciphertexts)
    assert _resources(json.loads(s.stack.cli("stack", "export", "--show-secrets"))) == decrypted
    result, _events, _took = s.stack.preview()
    assert set(result.change_summary) == {"same"}, f"{result.change_summary}\n{result.stdout[-3000:]}"
    s.results["restored"] = True


def test_consumer_reads_our_outputs_from_postgres(scenario, toolchain):
    scenario.require("restored")
    consumer_reads_outputs(scenario, toolchain)


def test_destroy_through_postgres(scenario, pg):
    s = scenario
    s.require("up")
    result, took = s.stack.destroy()
    s.times["destroy"] = took
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    for h in s.hosts:
        assert h.config_bytes() == s.original[h.name], f"{h.name}: the config file is not back to its original bytes"
        assert h.readyz() == 200, h.name
    assert _resources(json.loads(s.stack.cli("stack", "export"))) == []
    assert _locks(pg) == []
    print("\npostgres backend wall times: " + ", ".join(f"{k} {v:.1f}s" for k, v in s.times.items()))
