"""Evaluation time of the whole program under Pulumi's mocks for 3, 30 and 100 masters.

Target: 100 masters under 1.5 s, growing linearly. Usage: venv/bin/python bench/program_scale.py [--repeat N]
Keys are generated once per run before timing (the tls fakes cache them) and Pulumi's own mock monitor is
used, so the figures measure the program and the Pulumi runtime, not RSA key generation or the test
harness's bookkeeping.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.program import run  # noqa: E402
from tests.unit.hostkeys import host_key  # noqa: E402


def config(n: int, key: str) -> dict:
    return {
        "masters": [{"name": f"cp{i}", "address": f"198.18.{i // 250}.{i % 250 + 1}", "hostKey": host_key(i)}
                    for i in range(n)],
        "ssh": {"privateKey": key},
        "metricsServer": {"replicas": 2},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="*", default=[3, 30, 100])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/k"], check=True)
        key = Path(d, "k").read_text()
    run(config(1, key))  # warm-up: imports, key generation
    rows = []
    for n in args.sizes:
        times, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            run(config(n, key), record=False)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        resources = len(run(config(n, key)).resources)  # counted once, with the recording monitor
        tracemalloc.start()
        run(config(n, key), record=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append((n, resources, statistics.median(times), min(times),
                     statistics.median(cpu), peak / 2**20))
    # CPU seconds next to wall seconds: on a busy 2-core machine the wall figure mostly measures the load.
    print(f"{'masters':>8} {'resources':>10} {'median s':>9} {'min s':>7} {'cpu s':>6} {'ms/master':>10} {'peak MiB':>9}")
    for n, res, med, mn, c, peak in rows:
        print(f"{n:>8} {res:>10} {med:>9.3f} {mn:>7.3f} {c:>6.3f} {1000 * med / n:>10.2f} {peak:>9.1f}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if len(rows) >= 2:
        (n0, _, t0, *_), (n1, _, t1, *_) = rows[0], rows[-1]
        print(f"growth: {t1 / t0:.1f}x time for {n1 / n0:.1f}x masters; "
              f"target 100 masters < 1.5 s: {'met' if rows[-1][2] < 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
