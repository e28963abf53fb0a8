"""Shared fixtures of the unit tier: an SSH key and stack configs to evaluate the program with."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.support.program import with_overrides
from tests.unit.hostkeys import host_key


@pytest.fixture(scope="session")
def ssh_private_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real OpenSSH private key (never used to connect anywhere in the unit tier)."""
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "unit", "-f", str(path)], check=True)
    return path.read_text()


def masters(n: int) -> list[dict[str, Any]]:
    """n masters, their host keys pinned (config refuses unpinned ones unless ssh.insecureSkipHostKeyCheck)."""
    return [{"name": f"master{i + 1}", "address": f"198.18.0.{10 + i}", "hostKey": host_key(i)} for i in range(n)]


@pytest.fixture
def stack_config(ssh_private_key: str):
    """stack_config(n_masters=3, **overrides) -> a valid config dict (keys without the namespace)."""

    def make(n_masters: int = 3, **overrides: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "masters": masters(n_masters),
            "ssh": {"user": "root", "port": 22, "privateKey": ssh_private_key},
            "pki": {"hosts": ["127.0.0.1", "kubernetes", "kubernetes.default"]},
            "apiserver": {"layout": "env-file"},
            "metricsServer": {"replicas": 1},
        }
        return with_overrides(base, overrides)

    return make
