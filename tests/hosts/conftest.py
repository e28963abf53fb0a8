"""Fixtures of the host tier: a lab of SSH test hosts and the program's own remote commands."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.hosts import Host, Lab, LabError
from tests.hosts.remote import Outcome, SshRunner
from tests.support.program import with_overrides


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A fresh lab per test; namespaces, veths and processes are removed even when the test fails."""
    try:
        lab = Lab.create(tmp_path)
    except LabError as e:
        pytest.fail(f"cannot build the SSH test hosts: {e}", pytrace=False)
    try:
        yield lab
    finally:
        lab.close()


def stack_config(lab: Lab, hosts: list[Host], **overrides: Any) -> dict[str, Any]:
    """A stack config (keys without the namespace) whose masters are these test hosts, in this order."""
    base: dict[str, Any] = {
        "masters": [
            {"name": h.name, "address": h.address, "hostKey": h.host_key_pub, "layout": h.layout} for h in hosts
        ],
        "ssh": {"user": "root", "port": 22, "privateKey": lab.client_key.read_text()},
        "pki": {"hosts": ["127.0.0.1", "kubernetes", "kubernetes.default"]},
        # a steady second of 200s (the host script's default is 3): the tier restarts apiservers often
        "apiserver": {"readyTimeoutSeconds": 10, "readySteadySeconds": 1},
        "metricsServer": {"replicas": 1},
    }
    return with_overrides(base, overrides)


@dataclass
class Stack:
    """The program evaluated under mocks for a stack config, and its host steps run over SSH."""

    lab: Lab
    config: dict[str, Any]
    runner: SshRunner
    last: Any = None  # the last tests.support.program.Run

    def commands(self) -> list[dict[str, Any]]:
        from tests.support.program import run

        self.last = run(self.config)
        return self.last.commands

    def flags_for(self, host: Host) -> dict[str, str]:
        """The flags the program sets on this host (its layout's certDir)."""
        if self.last is None:
            self.commands()
        s = self.last.settings
        master = next(m for m in s.masters if m.name == host.name)
        from components.apiserver import apiserver_flags

        return apiserver_flags(s, master)

    def cert_dir(self, host: Host) -> str:
        if self.last is None:
            self.commands()
        s = self.last.settings
        from components.apiserver import cert_dir

        return cert_dir(s, next(m for m in s.masters if m.name == host.name))

    def up(self, **kw: Any) -> Outcome:
        return self.runner.up(self.commands(), **kw)

    def destroy(self) -> Outcome:
        return self.runner.destroy(self.commands())


@pytest.fixture
def make_stack(lab: Lab, tmp_path: Path):
    def make(hosts: list[Host], **overrides: Any) -> Stack:
        work = tmp_path / "ssh-client"
        work.mkdir(exist_ok=True)
        return Stack(lab, stack_config(lab, hosts, **overrides), SshRunner(work, lab.known_hosts(), timeout=120))

    return make


@pytest.fixture
def rename_master(make_stack):
    """rename_master(h) -> (old, renamed, new_commands, up, old_destroy): `up` the host as its first master,
    then as 'cp-renamed' the way the engine runs a rename: the new name's creates first (`up`, checked ok),
    the old name's deletes last (`old_destroy`, checked ok). `new_commands` destroy the new name later."""
    def rename(h: Host):
        old = make_stack([h])
        old_commands = old.commands()
        assert old.runner.up(old_commands).ok
        renamed = make_stack([h], masters=[{"name": "cp-renamed", "address": h.address,
                                            "hostKey": h.host_key_pub, "layout": h.layout}])
        new_commands = renamed.commands()
        up = renamed.runner.up(new_commands)
        assert up.ok, up.explain()
        old_destroy = old.runner.destroy(old_commands)
        assert old_destroy.ok, old_destroy.explain()
        return old, renamed, new_commands, up, old_destroy

    return rename
