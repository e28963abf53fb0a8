"""Rollout wall time over real SSH for 1, 3 and 5 masters against the physical limit.

The physical limit of a one-master-at-a-time rollout is the sum of every apiserver's restart-to-ready
time (each host's stand-in records when it was told to stop and when /readyz first answered 200 again).
This benchmark builds the SSH test hosts of tests/hosts (network + mount namespaces, sshd, stand-in
apiserver that takes --startup seconds to become ready), runs the exact commands the program builds
(`tests.support.program.run(...).commands`, certs in parallel, flags chained) and prints, per size:
wall time, the sum of restart-to-ready times, the ratio (target <= 1.10) and the overhead per master.

With --sandbox, the same ratio with the real thing instead: `pulumi up` of the sandbox stack
(Pulumi.sandbox.yaml, moved to a free 198.18.X.0/24 block as tests/e2e/test_sandbox.py does) through the
real engine against the three REAL kube-apiservers of sandbox/cluster.py. Every round starts its own
sandbox in a short temp dir (never make demo's block 200 or its dir), runs one `up` and tears the sandbox
down, so each round is the first rollout on a fresh control plane, as `make demo` does it (no warm-up round,
no rollout that follows a destroy). Per round, from the masters' own records and polling:
  * each master's restart: the supervisor's events.jsonl (lab/supervisor.py; ms wall-clock times):
    `stop` = SIGTERM sent to the running kube-apiserver, `started` = the new process spawned;
  * each master's ready: the first GET /readyz == "ok" sent after `started`, polled from the runner every
    --poll seconds (one thread per master, all through the up); the time is when that answer arrived;
  * (a) rollout wall time = last master's ready - first master's stop;
  * (b) sum over the masters of ready - stop (each real apiserver's restart-to-ready, shutdown included);
  * (a)/(b), printed next to the target 1.10 (not asserted);
  * (d) `up` start -> the first NodeMetricsList from GET /apis/metrics.k8s.io/v1beta1/nodes through the
    sandbox's apiservers (polled every 0.25 s during the up, and at most 120 s after it), and the `up` itself.

Usage (root, like the host tier):  venv/bin/python bench/rollout.py [--sizes 1,3,5] [--startup 5]
                                   venv/bin/python bench/rollout.py --sandbox [--rounds 3] [--poll 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sandbox_rounds import BenchError, run_rounds  # noqa: E402
from lab.hosts import Lab, LabError  # noqa: E402
from tests.hosts.conftest import stack_config  # noqa: E402
from tests.hosts.remote import SshRunner  # noqa: E402
from tests.support.program import run  # noqa: E402

TARGET = 1.10
METRICS_NODES = "/apis/metrics.k8s.io/v1beta1/nodes"


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


# ---- --sandbox: the real engine against the sandbox's real kube-apiservers -------------------------------
class Poller(threading.Thread):
    """Calls fn() every `interval` seconds (sleeping that long between calls) until stop();
    samples = [(sent, answered, value)] in time.time() seconds."""

    def __init__(self, fn: Callable[[], object], interval: float):
        super().__init__(daemon=True)
        self.fn, self.interval = fn, interval
        self.samples: list[tuple[float, float, object]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            sent = time.time()
            value = self.fn()
            self.samples.append((sent, time.time(), value))
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def read_events(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def sandbox_round(n: int, root: Path, tc, poll: float) -> dict:
    """One fresh sandbox, one `pulumi up` of the sandbox stack, the figures of the docstring."""
    from lab.kube import ApiError
    from sandbox.cluster import MASTERS, NODES, Sandbox, SandboxError, free_block_and_prefix
    from tests.e2e.engine import Project
    from tests.e2e.sandboxes import sandbox_config

    d = root / f"r{n}"
    block, prefix = free_block_and_prefix()
    sb = Sandbox(d / "sb", block, prefix, bin_dir=tc.bin_dir)
    pollers: list[Poller] = []
    try:
        t = time.monotonic()
        try:
            sb.up(log=lambda m: None, timeout=240)
        except SandboxError as e:
            raise BenchError(f"the sandbox did not start: {e}") from None
        sandbox_up = time.monotonic() - t
        stack = Project.copy(d / "project").stack(tc, d / "backend", "sandbox", sandbox_config(sb))

        readyz: dict[str, Poller] = {}
        for m in MASTERS:
            api = sb.master_api(m)
            api.timeout = 1.0
            readyz[m] = Poller(api.ok, poll)
        mapi = sb.api(timeout=2.0)

        def metrics() -> int | None:
            try:
                body = mapi.get(METRICS_NODES)
            except (OSError, ApiError, ValueError):
                return None
            return len(body.get("items") or []) if body and body.get("kind") == "NodeMetricsList" else None

        mpoll = Poller(metrics, 0.25)
        pollers = [*readyz.values(), mpoll]
        for p in pollers:
            p.start()
        time.sleep(0.5)
        t_up = time.time()
        try:
            result, took = stack.up()
        except Exception as e:  # auto.CommandError: the engine's own message, with the program's output
            raise BenchError(f"pulumi up failed: {str(e)[-3000:]}") from None
        if result.summary.result != "succeeded":
            raise BenchError(f"pulumi up: {result.summary.result}\n{result.stdout[-3000:]}")
        t_done = time.time()
        # bounded waits after the up: the metrics API (all nodes), and readyz after every master's last start
        deadline = t_done + 120
        while time.time() < deadline and not any(v == len(NODES) for _, _, v in mpoll.samples):
            time.sleep(0.25)

        def started_last(m: str) -> float:
            return max((e["t"] for e in read_events(sb.master_dir(m) / "events.jsonl") if e["event"] == "started"),
                       default=0.0)

        deadline = time.time() + 60
        while time.time() < deadline and not all(
                any(v for s, _, v in readyz[m].samples if s >= started_last(m)) for m in MASTERS):
            time.sleep(0.1)
        for p in pollers:
            p.stop()

        restarts = []  # one per stop of a running kube-apiserver during the up
        for m in MASTERS:
            evs = [e for e in read_events(sb.master_dir(m) / "events.jsonl") if e["t"] >= t_up]
            for i, e in enumerate(evs):
                if e["event"] != "stop":
                    continue
                stopped = next((x["t"] for x in evs[i:] if x["event"] == "stopped"), None)
                started = next((x["t"] for x in evs[i:] if x["event"] == "started"), None)
                if stopped is None or started is None:
                    raise BenchError(f"{m}: stopped at {e['t']:.3f} and not started again: {evs}")
                samples = readyz[m].samples
                k = next((j for j, (s, _, v) in enumerate(samples) if v and s >= started), None)
                if k is None:
                    raise BenchError(f"{m}: /readyz never answered ok after the restart at {e['t']:.3f}")
                ready = samples[k][1]
                window = ready - samples[k - 1][0] if k > 0 else 0.0
                killed = any(x["event"] == "killed" and x["t"] <= stopped for x in evs[i:])
                restarts.append({"master": m, "stop": e["t"], "stopped": stopped, "started": started,
                                 "ready": ready, "window": window, "killed": killed})
        if not restarts:
            raise BenchError("the up restarted no kube-apiserver")
        restarts.sort(key=lambda r: r["stop"])
        first_nml = next((a for _, a, v in mpoll.samples if v is not None), None)
        all_nodes = next((a for _, a, v in mpoll.samples if v == len(NODES)), None)
        handoffs = [nxt["stop"] - cur["ready"] for cur, nxt in zip(restarts, restarts[1:], strict=False)]
        a = max(r["ready"] for r in restarts) - restarts[0]["stop"]
        b = sum(r["ready"] - r["stop"] for r in restarts)
        return {
            "round": n, "sandbox_up": sandbox_up, "up": took, "a": a, "b": b, "ratio": a / b, "gaps": a - b,
            "before": restarts[0]["stop"] - t_up, "restarts": restarts, "handoffs": handoffs,
            "metrics": first_nml - t_up if first_nml is not None else float("nan"),
            "all_nodes": all_nodes - t_up if all_nodes is not None else float("nan"),
            "metrics_in_up": first_nml is not None and first_nml <= t_done,
            "window": max(r["window"] for r in restarts),
        }
    finally:
        for p in pollers:
            p.halt.set()
        sb.down(log=lambda m: None)


def sandbox_main(rounds: int, poll: float) -> int:
    from lab.supervisor import Unit
    from sandbox.cluster import MASTERS

    stop_timeout = Unit().stop_timeout  # the sandbox masters' (cluster.py writes the default Unit)

    def one_round(n: int, root: Path, tc) -> dict:
        row = sandbox_round(n, root, tc, poll)
        print(f"  round {n} done ({row['sandbox_up']:.0f} s sandbox start, not timed)", file=sys.stderr)
        return row

    done = run_rounds("sandbox", "mabench", rounds, one_round)
    if done is None:
        return 2
    rows = done.rows
    if not rows:
        print("no round finished", file=sys.stderr)
        return 2
    print(f"rollout on the sandbox: pulumi up (real engine) of Pulumi.sandbox.yaml, 3 real kube-apiservers; "
          f"{len(rows)} of {rounds} rounds, each on a fresh sandbox; target ratio (a)/(b) <= {TARGET:.2f}")
    cols = [("up s", "up", 6), ("first restart s", "before", 15), ("(a) rollout s", "a", 13),
            ("(b) sum restart->ready s", "b", 24), ("(a)/(b)", "ratio", 7), ("(a)-(b) s", "gaps", 9),
            ("(d) metrics API s", "metrics", 17), ("all 3 nodes s", "all_nodes", 13)]
    print(f"{'round':>6}  " + "  ".join(f"{h:>{w}}" for h, _, w in cols))
    for r in rows:
        print(f"{r['round']:>6}  " + "  ".join(f"{r[k]:>{w}.{3 if k == 'ratio' else 2}f}" for _, k, w in cols))
    for label, fn in (("median", statistics.median), ("min", min), ("max", max)):
        print(f"{label:>6}  " + "  ".join(f"{fn(r[k] for r in rows):>{w}.{3 if k == 'ratio' else 2}f}"
                                          for _, k, w in cols))
    print("per master, median over rounds (s): stop -> readyz 200 = shutdown (stop -> exited) + "
          "exited -> new process + start -> readyz 200")
    for m in MASTERS:
        rs = [x for r in rows for x in r["restarts"] if x["master"] == m]
        if not rs:
            print(f"  {m}: not restarted")
            continue

        def med(f, rs=rs):
            return statistics.median(f(x) for x in rs)

        print(f"  {m}: {med(lambda x: x['ready'] - x['stop']):5.2f} = {med(lambda x: x['stopped'] - x['stop']):5.2f}"
              f" + {med(lambda x: x['started'] - x['stopped']):5.2f} + {med(lambda x: x['ready'] - x['started']):5.2f}"
              f"   ({len(rs)} restart(s) in {len(rows)} round(s)"
              + (f"; shutdown ended by the supervisor's SIGKILL after {stop_timeout:.0f} s in {sum(x['killed'] for x in rs)})"
                 if any(x["killed"] for x in rs) else ")"))
    handoffs = [h for r in rows for h in r["handoffs"]]
    if handoffs:
        print(f"hand-off (a master's readyz 200 -> the next master's stop, i.e. the gate's detection + SSH + the next "
              f"step): median {statistics.median(handoffs):.2f} s, min {min(handoffs):.2f}, max {max(handoffs):.2f} "
              f"({len(handoffs)} hand-offs)")
    print(f"(d) metrics API: the first NodeMetricsList came before `up` returned in "
          f"{sum(r['metrics_in_up'] for r in rows)} of {len(rows)} round(s)")
    print(f"readyz polled every {poll * 1000:.0f} ms from the runner; detection window "
          f"(last not-ok sent -> first ok answered) <= {max(r['window'] for r in rows) * 1000:.0f} ms")
    med = statistics.median(r["ratio"] for r in rows)
    print(f"median ratio {med:.3f} (target <= {TARGET:.2f}: {'within' if med <= TARGET else 'above'}; not asserted)")
    print(f"machine: {os.cpu_count()} CPUs, load average {done.load_before:.1f} before / {os.getloadavg()[0]:.1f} "
          f"after; {time.monotonic() - done.started:.0f} s in all")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,3,5")
    ap.add_argument("--startup", type=float, default=10.0, help="stand-in restart-to-ready seconds (kube-apiserver: 10-60 s)")
    ap.add_argument("--sandbox", action="store_true",
                    help="instead: pulumi up of the sandbox stack against real kube-apiservers (root; a few minutes)")
    ap.add_argument("--rounds", type=int, default=3, help="--sandbox: rounds, each on a fresh sandbox")
    ap.add_argument("--poll", type=float, default=0.05, help="--sandbox: seconds between /readyz polls per master")
    args = ap.parse_args()
    if args.sandbox:
        return sandbox_main(args.rounds, args.poll)
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
    print(f"worst ratio {worst:.3f} (target <= {TARGET:.2f}: {'within' if worst <= TARGET else 'ABOVE'}; not asserted)")
    return 0  # a benchmark prints figures; it never fails on one


if __name__ == "__main__":
    sys.exit(main())
