"""What the sandbox benchmarks (rollout.py --sandbox, takeover.py) share: root, a short temp dir, the built
toolchain, and rounds that each report a row or fail with BenchError (printed, the next round goes on)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BenchError(Exception):
    pass


@dataclass
class Rounds:
    rows: list[Any]
    load_before: float  # the 1-minute load average when the benchmark started
    started: float  # time.monotonic() then


def run_rounds(what: str, prefix: str, rounds: int,
               round_fn: Callable[[int, Path, Any], Any]) -> Rounds | None:
    """round_fn(n, temp root, toolchain) for n = 1..rounds; None (said on stderr) when it cannot run."""
    from tests.e2e.engine import Toolchain, ToolchainError

    if os.geteuid() != 0:
        print(f"the {what} benchmark needs root (network + mount namespaces, sshd)", file=sys.stderr)
        return None
    done = Rounds(rows=[], load_before=os.getloadavg()[0], started=time.monotonic())
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: the ssh-agent socket lives there
    try:
        try:
            tc = Toolchain.ensure(root / "home")
        except ToolchainError as e:
            print(f"the {what} benchmark needs the built toolchain: {e}", file=sys.stderr)
            return None
        for n in range(1, rounds + 1):
            try:
                done.rows.append(round_fn(n, root, tc))
            except BenchError as e:
                print(f"round {n}: {e}", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return done
