"""The sandbox's own contract: `up` is idempotent and repairs a broken sandbox, `down` leaves nothing.

Runs on a sandbox of its own (a free block, a random namespace prefix, a temp dir), never the demo's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from sandbox.cluster import MASTERS, Sandbox, free_block_and_prefix
from tests.e2e.engine import Toolchain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _netns(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0].startswith(f"{prefix}-")]


def _addresses(block: int) -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
    return "\n".join(line for line in out.splitlines() if f" 198.18.{block}." in line)


def test_up_is_idempotent_repairs_and_down_removes_everything(toolchain: Toolchain, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sbxlife")
    sb = Sandbox(tmp / "sandbox", *free_block_and_prefix(), bin_dir=toolchain.bin_dir)
    logs: list[str] = []
    try:
        sb.up(log=logs.append, timeout=180)
        assert sb.problems() == []
        pids = dict(sb._load()["pids"])
        assert set(_netns(sb.prefix)) == {sb.ns(r) for r in ("br", "ctl", "m1", "m2", "m3", "pods", "nodes")}

        # a second up changes nothing
        logs.clear()
        sb.up(log=logs.append, timeout=180)
        assert any("already up" in m for m in logs), logs
        assert sb._load()["pids"] == pids

        # a dead daemon is noticed and the sandbox rebuilt
        os.kill(pids["podrunner"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not sb.problems() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any("podrunner" in p for p in sb.problems()), sb.problems()
        logs.clear()
        sb.up(log=logs.append, timeout=180)
        assert any("rebuilding" in m for m in logs), logs
        assert sb.problems() == []
        assert all(sb.master_api(m).ok() for m in MASTERS)
    finally:
        sb.down(log=lambda m: None)
    pids = sb.state.get("pids", {})
    assert _netns(sb.prefix) == []
    assert _addresses(sb.block) == ""
    assert not sb.dir.exists()
    alive = [n for n, p in pids.items() if os.path.exists(f"/proc/{p}") and
             open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == []
    sb.down(log=lambda m: None)  # a second down is a no-op
