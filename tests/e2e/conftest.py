"""Fixtures of the engine tier: the built toolchain, the SSH test hosts of the lab, a local control
plane, and one stack on a throw-away file backend.

The lab (lab.hosts) and the stack config of the host tier (tests.hosts.conftest.stack_config) are
reused as they are, so the engine drives the program against the same hosts the host tier uses.
A missing toolchain that cannot be built, a machine without namespaces, or a control plane that does
not start FAIL the tier with the reason: nothing here skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components import contract
from lab.apiserver import ControlPlane, ControlPlaneError
from lab.hosts import Host, Lab, LabError
from tests.e2e.engine import PROJECT, E2EStack, Project, Toolchain, ToolchainError, consumer_stack
from tests.e2e.sandboxes import earlier
from tests.hosts.conftest import stack_config

# env-file, systemd-unit and static-pod: the three layouts, one master each (3 hosts max)
LAYOUTS = ("env-file", "systemd-unit", "static-pod")


@pytest.fixture(scope="session")
def toolchain(tmp_path_factory: pytest.TempPathFactory) -> Toolchain:
    try:
        return Toolchain.ensure(tmp_path_factory.mktemp("pulumi-home"))
    except ToolchainError as e:
        reason = str(e)
    pytest.fail(f"the engine tier needs the built toolchain: {reason}", pytrace=False)


@dataclass
class Scenario:
    """One stack over three test hosts and a control plane, shared by the ordered cases of a module."""

    lab: Lab
    hosts: list[Host]
    cp: ControlPlane
    stack: E2EStack
    config: dict[str, Any]  # the metrics-aggregation:* values (unprefixed), as the host tier writes them
    original: dict[str, bytes]  # host name -> config file bytes before anything ran
    tmp: Path
    results: dict[str, Any] = field(default_factory=dict)  # what earlier cases left for later ones
    times: dict[str, float] = field(default_factory=dict)

    def settings(self):
        from components import config as config_mod

        return config_mod.parse(self.config)

    def master(self, host: Host):
        return next(m for m in self.settings().masters if m.name == host.name)

    def cert_dir(self, host: Host) -> str:
        from components.apiserver import cert_dir

        return cert_dir(self.settings(), self.master(host))

    def require(self, key: str) -> Any:
        return earlier(self.results, key)


def stack_values(config: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """Full config keys for Pulumi.<stack>.yaml: everything but the SSH key (set as a secret)."""
    plain = {f"{PROJECT}:{k}": v for k, v in config.items()}
    ssh = dict(plain[f"{PROJECT}:ssh"])
    ssh.pop("privateKey")
    plain[f"{PROJECT}:ssh"] = ssh
    plain["kubernetes:kubeconfig"] = str(kubeconfig)
    return plain


@contextmanager
def running_scenario(toolchain: Toolchain, tmp: Path, backend: Path | str | None = None,
                     name: str = "e2e") -> Iterator[Scenario]:
    """Three SSH test hosts (one per layout), a control plane and the stack `name` on `backend` (a backend
    URL, or a directory for a file backend; default `tmp/backend`), torn down at the end."""
    (tmp / "lab").mkdir()
    try:
        lab = Lab.create(tmp / "lab")
    except LabError as e:
        pytest.fail(f"cannot build the SSH test hosts: {e}", pytrace=False)
    cp = None
    try:
        hosts = [lab.add_host(f"m{i + 1}", layout=layout) for i, layout in enumerate(LAYOUTS)]
        original = {h.name: h.config_bytes() for h in hosts}
        try:
            cp = ControlPlane.start(toolchain.bin_dir, tmp / "controlplane")
        except ControlPlaneError as e:
            pytest.fail(f"cannot start the local control plane (etcd + kube-apiserver): {e}", pytrace=False)
        # no kubelet: the Deployment never gets pods and the Service no endpoints (expectNoPods skips both
        # awaits), and nothing can make the APIService Available (waitForAvailable false).
        config = stack_config(lab, hosts, metricsServer={"replicas": 1, "waitForAvailable": False, "expectNoPods": True})
        proj = Project.copy(tmp / "project")
        stack = proj.stack(
            toolchain, tmp / "backend" if backend is None else backend, name, stack_values(config, cp.kubeconfig),
            secret_paths={f"{PROJECT}:ssh.privateKey": config["ssh"]["privateKey"]},
        )
        sc = Scenario(lab, hosts, cp, stack, config, original, tmp)
        try:
            yield sc
        finally:
            # everything the engine printed, for a failing run (never contains key material: test_engine case 4)
            (tmp / "engine-output.log").write_text("\n".join(stack.outputs))
    finally:
        if cp is not None:
            cp.close()
        lab.close()


@pytest.fixture(scope="module")
def scenario(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with running_scenario(toolchain, tmp_path_factory.mktemp("e2e")) as sc:
        yield sc


def consumer_reads_outputs(sc: Scenario, toolchain: Toolchain) -> None:
    """examples/hpa-consumer on the scenario's backend: its StackReference reads the stack's real outputs, it
    checks the live APIService, its Deployment + autoscaling/v2 HPA land in the cluster; destroyed after."""
    consumer = consumer_stack(toolchain, sc.tmp / "consumer", sc.stack.env, sc.stack.name, sc.cp.kubeconfig)
    hpa_path = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/php-apache"
    lines: list[str] = []
    try:
        result = consumer.up(on_output=lines.append, color="never")
        out = {k: v.value for k, v in result.outputs.items()}
        assert out["metricsStack"] == f"organization/{PROJECT}/{sc.stack.name}"
        assert out["metricsApiService"] == "v1beta1.metrics.k8s.io"
        assert out["metricsServerNamespace"] == "kube-system"
        # the consumer read the contract's times (fresh certificates: nothing within 30 days)
        assert out["metricsContractVersion"] == contract.CONTRACT_VERSION
        assert out["expiringSoon"] == []
        hpa = sc.cp.get(hpa_path)
        assert hpa is not None, "the consumer's HPA is not in the cluster"
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        notes = hpa["metadata"]["annotations"]
        assert notes["hpa-consumer.metrics-aggregation.io/metrics-api-service"] == "v1beta1.metrics.k8s.io"
        assert sc.cp.get("/apis/apps/v1/namespaces/default/deployments/php-apache") is not None
    finally:
        consumer.destroy(on_output=lines.append, color="never")
        consumer.workspace.remove_stack(consumer.name)
    assert sc.cp.get(hpa_path) is None
