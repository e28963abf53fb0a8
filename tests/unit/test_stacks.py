"""The shipped stack files evaluate (with a private key injected: it is set per user as a secret)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.config import ConfigError
from tests.support.program import run

ROOT = Path(__file__).resolve().parents[2]


def stack_file(name: str) -> dict:
    data = yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())["config"]
    return {k.partition(":")[2]: v for k, v in data.items() if k.startswith("metrics-aggregation:")}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_needs_the_ssh_key_and_says_how(stack):
    with pytest.raises(ConfigError, match=r"ssh.privateKey: \(missing\).*pulumi config set --secret"):
        run(stack_file(stack))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_evaluates(stack, ssh_private_key):
    cfg = stack_file(stack)
    cfg["ssh"]["privateKey"] = ssh_private_key
    result = run(cfg, preview=True)
    # managed: a certs and a flags step per master; prod (kubeadm, apiserver.manage: false): a verify step
    steps = 2 if cfg["apiserver"].get("manage", True) else 1
    assert len(result.commands) == steps * len(cfg["masters"])


def test_dev_is_the_binary_install(ssh_private_key):
    cfg = stack_file("dev")
    cfg["ssh"]["privateKey"] = ssh_private_key
    result = run(cfg)
    assert [m["address"] for m in result.outputs["masters"]] == ["10.0.0.101", "10.0.0.102", "10.0.0.103"]
    assert "--layout env-file" in result.commands[1]["create"]
    assert result.outputs["apiserverFlags"]["--proxy-client-cert-file"] == "/etc/kubernetes/ssl/aggregator.pem"


def test_prod_verifies_kubelets_and_pins_host_keys(ssh_private_key):
    cfg = stack_file("prod")
    cfg["ssh"]["privateKey"] = ssh_private_key
    result = run(cfg)
    assert all(c["connection"].get("hostKey", "").startswith("ssh-ed25519 ") for c in result.commands)
    deployment = result.of_type("kubernetes:apps/v1:Deployment")[0]
    args = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--kubelet-insecure-tls") for a in args)
    assert any(a.startswith("--kubelet-certificate-authority=") for a in args)
    assert deployment.inputs["spec"]["replicas"] == 2


def test_prod_keeps_kubeadms_front_proxy(ssh_private_key):
    """The prod example is a kubeadm cluster: its front-proxy CA and flags stay kubeadm's (no CA is made,
    no apiserver restarted); each master is only checked, for kubeadm's allowed name."""
    cfg = stack_file("prod")
    cfg["ssh"]["privateKey"] = ssh_private_key
    result = run(cfg)
    assert [c["name"] for c in result.commands] == ["cp1-verify", "cp2-verify", "cp3-verify"]
    assert "--requestheader-allowed-names=front-proxy-client" in result.commands[0]["create"]
    assert result.outputs["apiserverFlags"] == {}
