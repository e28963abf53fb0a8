"""Wall time of `pulumi preview` and `pulumi up` with the real engine for 1, 3 and 5 masters, and the
share spent starting the provider plugins.

    sudo venv/bin/python bench/engine.py [--hosts 1,3,5] [--repeat 3]

Set-up (not timed): the built toolchain (tests/e2e/engine.py: private PULUMI_HOME, file backend in a
temp dir, passphrase secrets), the SSH test hosts of lab/hosts.py (env-file layout, stand-in
apiserver with 0.6 s restart-to-ready), and a loopback etcd + kube-apiserver + garbage collector
(lab/apiserver.py), with metricsServer.expectNoPods, exactly as the e2e tier runs.

Measured, per host count, through `pulumi.automation` (so each figure includes the CLI start, the
Python language host and the program's evaluation, as a user's `pulumi preview` does):
  * preview: of a fresh stack (everything to create), median of --repeat runs;
  * up: one run from empty to done; `svc await` is the span of the metrics-server Service's create
    (with expectNoPods its await is skipped, so this is the API round trip alone),
    `flags` the time from the first flags step starting to the last one finishing (the rolling
    restarts, one master at a time); both from the arrival times of the engine events;
  * destroy, for completeness.
Plugin start-up is not measured inside the engine: it is the difference between two tiny programs,
previewed with the same engine, backend and project copy, median of --repeat runs each:
  (a) a program that imports the tls, command and kubernetes SDKs and registers nothing, and
  (b) a program that registers only explicit tls, command and kubernetes Provider resources (the
      engine starts each plugin and runs CheckConfig/Configure, the kubernetes one against the same
      apiserver, as for the default providers of the real program).
  plugin start-up = (b) - (a); "share" = that difference / the preview or up wall time. It is an
  estimate: it includes registering three provider resources (tiny) and misses any per-plugin work
  done only when the first real resource is checked (schema loading on first Check, for example).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.apiserver import ControlPlane  # noqa: E402
from lab.hosts import Lab  # noqa: E402
from tests.e2e.conftest import stack_values  # noqa: E402
from tests.e2e.engine import PROJECT, Project, Toolchain  # noqa: E402
from tests.hosts.conftest import stack_config  # noqa: E402

# (a) imports the same SDK packages as (b) (importing pulumi_kubernetes alone takes a good part of a
# second), so that the difference is the plugins, not the Python imports
EMPTY_PROGRAM = """import pulumi
import pulumi_command  # noqa: F401
import pulumi_kubernetes  # noqa: F401
import pulumi_tls  # noqa: F401
"""
PROVIDERS_PROGRAM = """import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s
import pulumi_tls as tls

tls.Provider("tls")
command.Provider("command")
k8s.Provider("kubernetes", kubeconfig=pulumi.Config("kubernetes").require("kubeconfig"))
"""


def timed_preview(stack) -> float:
    t = time.monotonic()
    stack.stack.preview(color="never")
    return time.monotonic() - t


def baseline(tc: Toolchain, root: Path, program: str, kubeconfig: Path, repeat: int) -> float:
    proj = Project.copy(root / "project", program=program)
    st = proj.stack(tc, root / "backend", "bench", {"kubernetes:kubeconfig": str(kubeconfig)})
    timed_preview(st)  # warm the page cache / Python bytecode once
    return statistics.median(timed_preview(st) for _ in range(repeat))


def up_timeline(stack) -> dict[str, float]:
    """Wall time of `up`, and the Service-await and rolling-flags spans from engine event arrival times."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}

    def on_event(e) -> None:
        now = time.monotonic()
        if e.resource_pre_event is not None:
            starts[e.resource_pre_event.metadata.urn] = now
        elif e.res_outputs_event is not None:
            ends[e.res_outputs_event.metadata.urn] = now

    t = time.monotonic()
    r = stack.stack.up(color="never", on_event=on_event)
    total = time.monotonic() - t
    if r.summary.result != "succeeded":
        raise SystemExit(f"up failed:\n{r.stdout[-3000:]}")
    svc = [u for u in ends if u.endswith("::metrics-server-service") and "core/v1:Service" in u]
    flags = [u for u in ends if u.endswith("-flags")]
    return {
        "up": total,
        "svc": ends[svc[0]] - starts[svc[0]] if svc else float("nan"),
        "flags": (max(ends[u] for u in flags) - min(starts[u] for u in flags)) if flags else float("nan"),
    }


def bench_hosts(tc: Toolchain, n: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-engine-{n}-") as d:
        root = Path(d)
        (root / "lab").mkdir()
        lab = Lab.create(root / "lab")
        cp = None
        try:
            hosts = [lab.add_host(f"m{i + 1}", layout="env-file") for i in range(n)]
            cp = ControlPlane.start(tc.bin_dir, root / "cp")
            # a stack made to be destroyed: its CA unprotected (the default would refuse the destroy)
            cfg = stack_config(lab, hosts, pki={"protectCa": False},
                               metricsServer={"replicas": 1, "waitForAvailable": False, "expectNoPods": True})
            proj = Project.copy(root / "project")
            st = proj.stack(tc, root / "backend", "bench", stack_values(cfg, cp.kubeconfig),
                            secret_paths={f"{PROJECT}:ssh.privateKey": cfg["ssh"]["privateKey"]})
            out: dict[str, float] = {"preview": statistics.median(timed_preview(st) for _ in range(repeat))}
            out.update(up_timeline(st))
            out["preview_same"] = timed_preview(st)
            t = time.monotonic()
            st.stack.destroy(color="never")
            out["destroy"] = time.monotonic() - t
            if n == 1:
                out["empty"] = baseline(tc, root / "empty", EMPTY_PROGRAM, cp.kubeconfig, repeat)
                out["providers"] = baseline(tc, root / "providers", PROVIDERS_PROGRAM, cp.kubeconfig, repeat)
            return out
        finally:
            if cp is not None:
                cp.close()
            lab.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", default="1,3,5")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the SSH test hosts are network + mount namespaces)")
    with tempfile.TemporaryDirectory(prefix="bench-engine-home-") as home:
        tc = Toolchain.ensure(Path(home))
        counts = [int(x) for x in args.hosts.split(",")]
        rows = {}
        for n in sorted(counts):
            rows[n] = bench_hosts(tc, n, args.repeat)
            print(f"  measured {n} host(s)", file=sys.stderr)
    base = next(r for r in rows.values() if "empty" in r)
    plugin = base["providers"] - base["empty"]
    version = subprocess.run([str(tc.bin_dir / "pulumi"), "version"], capture_output=True, text=True,
                             env=tc.env, timeout=60).stdout.strip()
    print(f"engine: pulumi {version} (built toolchain); load {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs; preview median of {args.repeat}")
    print(f"baseline previews: empty program {base['empty']:.2f} s, + tls/command/kubernetes providers "
          f"{base['providers']:.2f} s -> plugin start-up ~{plugin:.2f} s")
    hdr = (f"{'masters':>7} | {'preview s':>9} | {'plugins %':>9} | {'up s':>6} | {'plugins %':>9} | "
           f"{'svc await s':>11} | {'flags s':>7} | {'preview=same s':>14} | {'destroy s':>9}")
    print(hdr)
    print("-" * len(hdr))
    for n, r in rows.items():
        print(f"{n:>7} | {r['preview']:>9.2f} | {100 * plugin / r['preview']:>8.0f}% | {r['up']:>6.2f} | "
              f"{100 * plugin / r['up']:>8.0f}% | {r['svc']:>11.2f} | {r['flags']:>7.2f} | "
              f"{r['preview_same']:>14.2f} | {r['destroy']:>9.2f}")


if __name__ == "__main__":
    main()
