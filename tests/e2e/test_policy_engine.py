"""The policy pack under the real engine: `pulumi preview --policy-pack policy` on the shipped prod
example passes, and a deliberately bad production stack fails with each policy's message.

Preview only: it never dials SSH, and the kubeconfig points at a closed loopback port (pulumi-kubernetes
previews without server-side checks when the cluster is unreachable), so nothing is contacted.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.engine import PROJECT, REPO, Project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def prod_config() -> dict:
    return yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]


def preview_with_pack(toolchain, tmp: Path, name: str, config: dict, ssh_key: str,
                      pack_config: Path = REPO / "policy" / "config" / "prod.json") -> subprocess.CompletedProcess:
    proj = Project.copy(tmp / f"project-{name}")
    (tmp / "kubeconfig").write_text(UNREACHABLE_KUBECONFIG)
    config = {**config, "kubernetes:kubeconfig": str(tmp / "kubeconfig")}
    stack = proj.stack(toolchain, tmp / "backend", name, config,
                       secret_paths={f"{PROJECT}:ssh.privateKey": ssh_key})
    return subprocess.run(
        [str(stack.pulumi_bin), "preview", "--stack", name, "--non-interactive", "--color", "never",
         "--policy-pack", str(REPO / "policy"), "--policy-pack-config", str(pack_config)],
        cwd=proj.dir, env=stack.env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text()


def test_the_prod_example_passes_the_pack(toolchain, tmp_path, ssh_key):
    p = preview_with_pack(toolchain, tmp_path, "prod", prod_config(), ssh_key)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "Loading policy packs...: done" in p.stdout
    assert "\u2705 metrics-aggregation-guardrails@" in p.stdout, p.stdout[-3000:]  # the pack ran and passed


def test_a_bad_production_stack_fails_with_each_policys_message(toolchain, tmp_path, ssh_key):
    cfg = prod_config()
    ns = f"{PROJECT}:"
    for m in cfg[ns + "masters"]:
        m.pop("hostKey")  # host keys not pinned: the stack must say so, and the pack still refuses it
    cfg[ns + "ssh"]["insecureSkipHostKeyCheck"] = True
    cfg[ns + "pki"].update(keyAlgorithm="RSA", rsaBits=2048, certValidityHours=17520, caValidityHours=87600)
    # the prod example keeps kubeadm's front-proxy (no proxy cert of ours): a managed one has a leaf to bound
    cfg[ns + "apiserver"].update(manage=True, certDir="/etc/kubernetes/pki/aggregator")
    ms = cfg[ns + "metricsServer"]
    ms.pop("kubeletCaCertPem")
    ms["kubeletInsecureTls"] = True
    p = preview_with_pack(toolchain, tmp_path, "bad", cfg, ssh_key)
    text = p.stdout + p.stderr
    assert p.returncode != 0, text[-4000:]
    for policy in ("host-keys-pinned-in-production", "no-kubelet-insecure-tls-in-production", "leaf-validity-bounded"):
        assert policy in text, f"{policy} did not fire:\n{text[-4000:]}"
    assert "--kubelet-insecure-tls" in text


def test_the_pack_sees_the_stack_under_this_engine(toolchain, tmp_path, ssh_key):
    """The engine sends the stack's name and config in ConfigureStack, and the language host starts the
    pack with them as PULUMI_STACK / PULUMI_CONFIG (pulumi sdk/python/cmd/pulumi-language-python/main.go
    RunPlugin; policy/__main__.py patches nothing): a stack named `production` whose pack config does not
    say `production` is production by its name."""
    pack_config = json.loads((REPO / "policy" / "config" / "prod.json").read_text())
    for policy in pack_config.values():
        policy.pop("production", None)
    (tmp_path / "pack.json").write_text(json.dumps(pack_config))
    cfg = prod_config()
    for m in cfg[f"{PROJECT}:masters"]:
        m.pop("hostKey")
    cfg[f"{PROJECT}:ssh"]["insecureSkipHostKeyCheck"] = True  # else config refuses it before the pack runs
    p = preview_with_pack(toolchain, tmp_path, "production", cfg, ssh_key, tmp_path / "pack.json")
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "host-keys-pinned-in-production" in text, text[-4000:]


def test_the_pack_reads_the_flags_the_component_records(toolchain, tmp_path, ssh_key):
    """What every master's flags step sets reaches the pack as ApiserverAggregation's `masters` (its inputs
    for resource policies, its registered outputs for stack policies), never from a command line: a managed
    prod stack passes proxy-client-cert-accepted, and an extra flag that opens the apiserver is refused by
    name of the master's flags step."""
    cfg = prod_config()
    ns = f"{PROJECT}:"
    cfg[ns + "apiserver"].update(manage=True, certDir="/etc/kubernetes/pki/aggregator")
    p = preview_with_pack(toolchain, tmp_path, "managed", cfg, ssh_key)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "\u2705 metrics-aggregation-guardrails@" in p.stdout, p.stdout[-3000:]

    cfg[ns + "apiserver"]["extraFlags"] = {"--anonymous-auth": True}
    p = preview_with_pack(toolchain, tmp_path, "anonymous", cfg, ssh_key)
    text = p.stdout + p.stderr
    assert p.returncode != 0, text[-4000:]
    first = cfg[ns + "masters"][0]["name"]
    assert f"command '{first}-flags' sets --anonymous-auth=true" in text, text[-4000:]
    assert "proxy-client-cert-accepted" not in text, text[-4000:]
