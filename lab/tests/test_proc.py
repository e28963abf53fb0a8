"""lab.proc.kill_tree: what the engine-tier tests use to stop a `pulumi up` they started."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.proc import children_of, gone, kill_tree, run_tree, wait_for

# A parent whose child runs in a process group of its own, as the Pulumi CLI starts its plugins, and a
# grandchild below that: killpg on the parent reaches neither.
TREE = (
    "import os, subprocess, sys, time\n"
    "sub = 'import subprocess, time; subprocess.Popen([\"sleep\", \"60\"]); time.sleep(60)'\n"
    "subprocess.Popen([sys.executable, '-c', sub], start_new_session=True)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_kill_tree_reaches_children_in_other_process_groups():
    p = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        child = wait_for(lambda: children_of(p.pid), "the child", timeout=10)[0]
        wait_for(lambda: children_of(child), "the grandchild", timeout=10)
        killed = kill_tree(p.pid)
        assert len(killed) == 3, killed
        p.wait(timeout=10)
        wait_for(lambda: all(gone(pid) for pid in killed), "the end of the whole tree", timeout=10)
    finally:
        if p.poll() is None:
            kill_tree(p.pid)
            p.wait(timeout=10)


def test_run_tree_kills_the_whole_tree_on_a_timeout():
    """subprocess.run's timeout kills only its own child; run_tree's reaches the grandchild in its own session."""
    marker = f"run-tree-{os.getpid()}"
    code = ("import subprocess, sys, time\n"
            f"subprocess.Popen(['sleep', '60', '{marker}'], start_new_session=True)\n"
            "time.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        run_tree([sys.executable, "-c", code], timeout=2)
    wait_for(lambda: not _running(marker), "the end of the grandchild", timeout=10)
    done = run_tree([sys.executable, "-c", "print('out'); import sys; sys.exit(3)"], timeout=30)
    assert (done.returncode, done.stdout) == (3, "out\n")


def _running(marker: str) -> bool:
    """A process whose command line holds `marker` (and is not a zombie) is running."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes() and not gone(int(d.name)):
                    return True
            except OSError:
                continue
    return False
