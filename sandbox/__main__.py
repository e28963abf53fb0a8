"""python -m sandbox up|down|status|env  (root; see sandbox/cluster.py)

  up            start the sandbox (idempotent); --timeout SECONDS bounds the start
  down          stop everything it started and delete its namespaces and directory (idempotent)
  status        print what runs and whether each apiserver is ready; exit 1 when unhealthy
  env           print `export KUBECONFIG=...` for a shell
Options: --dir (default /run/metrics-aggregation-sandbox), --block (198.18.<block>.0/24, default 200),
--prefix (network namespace prefix, default masbx). `make demo` uses the defaults, which Pulumi.sandbox.yaml
names; the e2e tier starts its own sandbox with other values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sandbox.cluster import DEFAULT_BLOCK, DEFAULT_DIR, DEFAULT_PREFIX, Sandbox, SandboxError


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m sandbox")
    ap.add_argument("command", choices=("up", "down", "status", "env"))
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--block", type=int, default=DEFAULT_BLOCK, choices=range(0, 256), metavar="0..255")
    ap.add_argument("--prefix", default=DEFAULT_PREFIX)
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args(argv)
    sb = Sandbox(a.dir, a.block, a.prefix)
    try:
        if a.command == "up":
            sb.up(log=lambda m: print(m, flush=True), timeout=a.timeout)
        elif a.command == "down":
            sb.down(log=lambda m: print(m, flush=True))
        elif a.command == "status":
            bad = sb.problems()
            for line in bad:
                print(f"[sandbox] {line}")
            if not bad:
                print(f"[sandbox] up: masters {', '.join(f'{n} {ip}' for n, ip in sb.masters.items())}; "
                      f"KUBECONFIG={sb.kubeconfig}")
            return 1 if bad else 0
        elif a.command == "env":
            print(f"export KUBECONFIG={sb.kubeconfig}")
    except SandboxError as e:
        print(f"[sandbox] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
