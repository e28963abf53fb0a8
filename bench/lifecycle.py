"""Day two on the sandbox: the metrics API and the apiservers while certificates are renewed and the
aggregator CA is rotated, and the drift audit's wall time for 3 masters (issue 13).

Each round starts its own sandbox (sandbox/cluster.py on a free 198.18.X.0/24 block, in a short temp dir;
never make demo's), runs `pulumi up` of the sandbox stack through the real engine (tests/e2e/sandboxes.py
sandbox_config, with pki.renewNow "1" recorded), then, while GET /apis/metrics.k8s.io/v1beta1/nodes is
sampled every --interval seconds (0.2) through EVERY master (a thread per master, lab/sampler.py; a sample
is ok when it is a NodeMetricsList with every node):
  * renewal (proxy cert): pki.renewNow bumped, one `up`, then --settle seconds;
  * renewal (serving cert): its end moved into earlyRenewalHours in the state (what time does), one `up`,
    the Deployment's rollout (until a new process at the other pod address is the ready one), then --settle;
  * rotation: the three stages of docs/ca-rotation.md, one `up` each (trust; sign once the program's gate
    lets it, i.e. the new CA is 65 s old; done after another 65 s), then --settle seconds; sampled from
    the first `up` to the end, waits included;
  * audit: `python -m tools.audit --stack … --json` as `make audit` runs it, --audits times, after the
    rotation (it must be clean): the command's wall time and the checks' own time (its `seconds`).
Printed per phase: samples, failures, the longest gap (the longest time one master gave no ok answer), the
apiserver restarts (each master's supervisor generation, lab/supervisor.py; target 0) and `up` times.
Targets, printed and never asserted: 0 failures and 0 restarts during renewal and rotation.

Usage (root):  venv/bin/python bench/lifecycle.py [--rounds 1] [--interval 0.2] [--settle 10] [--audits 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sandbox_rounds import BenchError, run_rounds  # noqa: E402
from lab.sampler import Sampler  # noqa: E402
from sandbox.cluster import MASTERS, Sandbox, SandboxError, free_block_and_prefix, wait_for  # noqa: E402
from tests.e2e import handmade as hm  # noqa: E402

PKI = "metrics-aggregation:pki"
SERVING_CERT = "metrics-server-serving-cert"
GATE_SECONDS = 65  # docs/ca-rotation.md: the new CA's age the `sign` stage waits for, and the wait before done


def phase(sb: Sandbox, interval: float, settle: float, steps: list[Callable[[], float | None]]) -> dict:
    """Run `steps` (each returns an `up`'s seconds, or None for a wait) while the metrics API is sampled
    through every master; then `settle` seconds more. -> the phase's figures."""
    from tests.e2e.sandboxes import metrics_api_probes

    gens = hm.generations(sb)
    ups: list[float] = []
    error = None
    with Sampler(metrics_api_probes(sb, timeout=2.0), interval=interval, max_duration=1200) as s:
        try:
            for step in steps:
                took = step()
                if took is not None:
                    ups.append(took)
        except Exception as e:  # noqa: BLE001 - auto.CommandError and the like: printed with what was sampled
            error = str(e)[-2000:]
        time.sleep(settle)
    r = s.report()
    return {"samples": r.samples, "failures": len(r.failures), "gap": r.longest_gap_s, "window": r.duration_s,
            "first_failures": [str(f) for f in r.failures[:5]], "ups": ups, "error": error,
            "restarts": {m: hm.generation(sb, m) - gens[m] for m in MASTERS}}


def lifecycle_round(n: int, root: Path, tc: Any, args: argparse.Namespace) -> dict:
    from tests.e2e.engine import Project
    from tests.e2e.sandboxes import sandbox_config, serving_metrics_server

    d = root / f"r{n}"
    sb = Sandbox(d / "sb", *free_block_and_prefix(), bin_dir=tc.bin_dir)
    try:
        try:
            sb.up(log=lambda m: None, timeout=240)
        except SandboxError as e:
            raise BenchError(f"the sandbox did not start: {e}") from None
        config = sandbox_config(sb)
        config[PKI] = {**config[PKI], "renewNow": "1"}
        stack = Project.copy(d / "project").stack(tc, d / "backend", "lifecycle", config)
        _, first_up = stack.up()
        try:
            hm.wait_for_metrics(sb)
        except SandboxError as e:
            raise BenchError(f"the metrics API did not answer after the first up: {e}") from None

        def up_after(change: Callable[[], None]) -> Callable[[], float]:
            def step() -> float:
                change()
                return stack.up()[1]
            return step

        def wait(seconds: float) -> Callable[[], None]:
            return lambda: time.sleep(seconds)

        row: dict[str, Any] = {"round": n, "first_up": first_up}
        row["proxy renewal"] = phase(sb, args.interval, args.settle, [up_after(lambda: stack.set_keys(PKI, renewNow="2"))])
        before = (serving_metrics_server(sb) or ("",))[0]

        def rolled() -> None:
            # the window covers the Deployment's rollout: a new process, at the other pod address, ready
            wait_for(lambda: (serving_metrics_server(sb) or ("",))[0] not in ("", before),
                     "the metrics-server rollout", 240, 0.5, error=BenchError)

        row["serving renewal"] = phase(sb, args.interval, args.settle, [
            up_after(lambda: stack.move_cert_end(SERVING_CERT, 1, d)), rolled])
        row["rotation"] = phase(sb, args.interval, args.settle, [
            up_after(lambda: stack.set_keys(PKI, caGeneration=2, caRotation="trust")), wait(GATE_SECONDS + 2),
            up_after(lambda: stack.set_keys(PKI, caRotation="sign")), wait(GATE_SECONDS),
            up_after(lambda: stack.set_keys(PKI, caRotation=None))])
        audits = []
        for _ in range(args.audits):
            rc, out, err, wall = stack.audit("--json")
            if rc != 0:
                raise BenchError(f"the audit after the rotation exited {rc}: {(out or err)[-2000:]}")
            audits.append((wall, json.loads(out)["seconds"]))
        row["audit"] = audits
        return row
    finally:
        sb.down(log=lambda m: None)


def verdict(p: dict, restarts: int) -> str:
    if p["error"]:
        return "INCOMPLETE (an up failed)"
    return "met" if p["failures"] == 0 and restarts == 0 else "MISSED"


def print_round(r: dict, interval: float) -> None:
    print(f"round {r['round']}: first up {r['first_up']:.1f} s (not sampled)")
    for name in ("proxy renewal", "serving renewal", "rotation"):
        p = r[name]
        restarts = sum(p["restarts"].values())
        ups = " + ".join(f"{u:.1f}" for u in p["ups"])
        print(f"  {name}: up {ups} s; metrics API {p['samples']} samples every {interval * 1000:.0f} ms per master "
              f"over {p['window']:.0f} s, {p['failures']} failed, longest gap {p['gap']:.2f} s; apiserver "
              f"restarts {restarts} ({', '.join(f'{m} {c}' for m, c in p['restarts'].items())}) -> target 0 and 0: "
              f"{verdict(p, restarts)} (not asserted)")
        for f in p["first_failures"]:
            print(f"    failed: {f}")
        if p["error"]:
            print("    the phase failed: " + "\n    ".join(p["error"].strip().splitlines()[-8:]))
    if not r["audit"]:
        return
    walls = [w for w, _ in r["audit"]]
    checks = [c for _, c in r["audit"]]
    print(f"  audit of 3 masters + the cluster (clean), {len(walls)} runs: median {statistics.median(walls):.2f} s "
          f"for the command ({min(walls):.2f}-{max(walls):.2f}), {statistics.median(checks):.2f} s for the checks")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="rounds, each on a fresh sandbox")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between samples, per master")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds sampled after each phase's last up")
    ap.add_argument("--audits", type=int, default=3, help="audit runs after the rotation")
    args = ap.parse_args()
    done = run_rounds("lifecycle", "malc", args.rounds, lambda n, root, tc: lifecycle_round(n, root, tc, args))
    if done is None:
        return 2
    print("day two on the sandbox: pulumi up (real engine), 3 real kube-apiservers, metrics-server; the metrics API "
          "sampled through every master")
    for r in done.rows:
        print_round(r, args.interval)
    print(f"machine: {os.cpu_count()} CPUs, load average {done.load_before:.1f} before / {os.getloadavg()[0]:.1f} "
          f"after; {time.monotonic() - done.started:.0f} s in all")
    return 0 if done.rows else 2


if __name__ == "__main__":
    sys.exit(main())
