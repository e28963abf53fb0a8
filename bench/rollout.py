"""Rollout wall time over real SSH for 1, 3 and 5 masters against the physical limit.

The physical limit of a one-master-at-a-time rollout is the sum of every apiserver's restart-to-ready
time (each host's stand-in records when it was told to stop and when /readyz first answered 200 again).
This benchmark builds the SSH test hosts of tests/hosts (network + mount namespaces, sshd, stand-in
apiserver that takes --startup seconds to become ready), runs the exact commands the program builds
(`tests.support.program.run(...).commands`, certs in parallel, flags chained) and prints, per size:
wall time, the sum of restart-to-ready times, the ratio (target <= 1.10) and the overhead per master.

Usage (root, like the host tier):  venv/bin/python bench/rollout.py [--sizes 1,3,5] [--startup 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hosts.conftest import stack_config  # noqa: E402
from tests.hosts.lab import Lab, LabError  # noqa: E402
from tests.hosts.remote import SshRunner  # noqa: E402
from tests.support.program import run  # noqa: E402

TARGET = 1.10


def measure(n: int, startup: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        root = Path(tmp)
        lab = Lab.create(root)
        try:
            hosts = [lab.add_host(f"cp{i + 1}", "env-file", startup_seconds=startup) for i in range(n)]
            commands = run(stack_config(lab, hosts, apiserver={"readyTimeoutSeconds": int(startup * 4 + 10)})).commands
            (root / "ssh").mkdir()
            runner = SshRunner(root / "ssh", lab.known_hosts(), timeout=startup * 4 + 60)
            t0 = time.time()
            out = runner.up(commands)
            wall = time.time() - t0
            if not out.ok:
                raise SystemExit(f"rollout of {n} failed:\n{out.explain()}")
            limit = 0.0
            for h in hosts:
                spans = h.down_intervals()
                assert len(spans) == 1, f"{h.name}: expected one restart, got {spans}"
                limit += spans[0][1] - spans[0][0]
            flags = [out[f"{h.name}-flags"] for h in hosts]
            chain = flags[-1].end - min(r.start for r in flags)
            return {"n": n, "wall": wall, "chain": chain, "limit": limit, "before": min(r.start for r in flags) - t0}
        finally:
            lab.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,3,5")
    ap.add_argument("--startup", type=float, default=10.0, help="stand-in restart-to-ready seconds (kube-apiserver: 10-60 s)")
    args = ap.parse_args()
    load0, cpu0 = os.getloadavg()[0], os.times()
    try:
        rows = [measure(int(n), args.startup) for n in args.sizes.split(",")]
    except LabError as e:
        print(f"cannot build the SSH test hosts: {e}", file=sys.stderr)
        return 2
    print(f"rollout over SSH, stand-in restart-to-ready ~{args.startup:.1f}s, target ratio <= {TARGET:.2f}")
    print(f"{'masters':>7}  {'wall s':>8}  {'script+certs s':>14}  {'flags chain s':>13}  {'sum restart->ready s':>20}  {'ratio':>6}  {'overhead/master s':>17}")
    worst = 0.0
    for r in rows:
        ratio = r["wall"] / r["limit"]
        worst = max(worst, ratio)
        print(
            f"{r['n']:>7}  {r['wall']:>8.2f}  {r['before']:>14.2f}  {r['chain']:>13.2f}  {r['limit']:>20.2f}  {ratio:>6.3f}  "
            f"{(r['wall'] - r['limit']) / r['n']:>17.3f}"
        )
    cpu1 = os.times()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load0:.1f} before / {os.getloadavg()[0]:.1f} after; "
        f"runner CPU time {cpu1.user + cpu1.system + cpu1.children_user + cpu1.children_system - cpu0.user - cpu0.system - cpu0.children_user - cpu0.children_system:.1f}s"
    )
    print(f"worst ratio {worst:.3f}: {'OK' if worst <= TARGET else 'ABOVE TARGET'}")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
