"""Wall time of `pulumi up`, a no-change `preview` and `destroy` for 3 masters on the postgres DIY backend
against the file backend, as ratios from one run of each.

    sudo venv/bin/python bench/backend.py

Set-up (not timed): the built toolchain, a PostgreSQL server started for the run (tools/pg_backend.py
in a temp dir, free loopback port: what `make backend-up` runs), and for each backend a fresh copy of
the e2e tier's scenario (tests/e2e/conftest.running_scenario: the 3 SSH test hosts, one per layout, and a
loopback etcd + kube-apiserver, metricsServer.expectNoPods). The file backend runs first, then postgres,
each on its own hosts, so neither inherits the other's warm state on the hosts. Each figure is one run
through `pulumi.automation` (CLI start, language host, program, providers, the rolling restarts): the
difference between the backends is the state traffic (a checkpoint write per step) and the lock. One run
only, so read small ratios as noise; nothing is asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.proc import free_port  # noqa: E402
from tests.e2e.conftest import running_scenario  # noqa: E402
from tests.e2e.engine import PROJECT, Toolchain  # noqa: E402
from tools.pg_backend import PgBackend  # noqa: E402

STEPS = ("up", "preview (no changes)", "destroy")


def measure(tc: Toolchain, root: Path, backend: Path | str) -> dict[str, float]:
    root.mkdir()
    with running_scenario(tc, root, backend=backend, name="bench") as sc:
        # made to be destroyed: the default protected CA would refuse the destroy
        sc.stack.write_config({f"{PROJECT}:pki": {"protectCa": False}})
        up, t_up = sc.stack.up()
        if up.summary.result != "succeeded":
            raise SystemExit(f"up failed:\n{up.stdout[-3000:]}")
        preview, _events, t_preview = sc.stack.preview()
        if set(preview.change_summary) != {"same"}:
            raise SystemExit(f"the second preview has changes: {preview.change_summary}")
        _down, t_destroy = sc.stack.destroy()
        return dict(zip(STEPS, (t_up, t_preview, t_destroy), strict=True))


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("needs root (the SSH test hosts are network + mount namespaces)")
    pg_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # not 0700 parents: the server runs as postgres
    pg = PgBackend(pg_dir, free_port())
    try:
        with tempfile.TemporaryDirectory(prefix="bench-backend-") as d:
            root = Path(d)
            (root / "pulumi-home").mkdir()
            tc = Toolchain.ensure(root / "pulumi-home")
            pg.up()
            rows = {"file": measure(tc, root / "file", root / "file-state")}
            print("  measured the file backend", file=sys.stderr)
            rows["postgres"] = measure(tc, root / "postgres", pg.url())
            print("  measured the postgres backend", file=sys.stderr)
            version = subprocess.run([str(tc.bin_dir / "pulumi"), "version"], capture_output=True, text=True,
                                     env=tc.env, timeout=60).stdout.strip()
            server = pg.query("SHOW server_version").strip()
    finally:
        pg.down()
        shutil.rmtree(pg_dir, ignore_errors=True)
    print(f"engine: pulumi {version} (built toolchain); PostgreSQL {server} on 127.0.0.1; 3 masters; "
          f"load {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; one run each")
    hdr = f"{'step':<21} | {'file s':>7} | {'postgres s':>10} | {'postgres/file':>13}"
    print(hdr)
    print("-" * len(hdr))
    for step in STEPS:
        f, p = rows["file"][step], rows["postgres"][step]
        print(f"{step:<21} | {f:>7.2f} | {p:>10.2f} | {p / f:>12.2f}x")


if __name__ == "__main__":
    main()
