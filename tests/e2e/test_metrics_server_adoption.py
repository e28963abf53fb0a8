"""Adoption of a hand-applied metrics-server, with the real engine and provider on a sandbox.

The upstream-shaped manifest (tests/e2e/data/metrics-server-upstream.yaml: upstream names and labels,
`--kubelet-insecure-tls`, an APIService with `insecureSkipTLSVerify: true`) is applied the three ways a
person does it: `kubectl apply` (client-side), `kubectl apply --server-side`, `kubectl create`. Each
time `pulumi up` with the sandbox stack must take every object over in place (same uid: nothing deleted
and recreated, no Server-Side Apply conflict), the APIService must carry the program's caBundle and no
insecureSkipTLSVerify (and become Available: the stack waits for it), the Deployment must run the
program's args, and a second preview must be empty. Between the cases, a destroy targeted at the
MetricsServer component removes its objects again (the masters keep their flags).
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components import metrics_server as ms
from lab.kube import ApiError
from sandbox.cluster import Sandbox, wait_for
from tests.e2e.engine import PROJECT, E2EStack, Project, Toolchain
from tests.e2e.sandboxes import running_sandbox, sandbox_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MANIFEST = Path(__file__).parent / "data" / "metrics-server-upstream.yaml"
METRICS_NODES = "/apis/metrics.k8s.io/v1beta1/nodes"
COMPONENT_URN = f"urn:pulumi:sandbox::{PROJECT}::{ms.TYPE}::metrics-server"
APPLY = {
    "client-side": ["apply", "-f"],
    "server-side": ["apply", "--server-side", "-f"],
    "create": ["create", "-f"],
}


@dataclass
class Adoption:
    sb: Sandbox
    stack: E2EStack
    kubectl: str

    def k(self, *args: str, timeout: float = 60) -> str:
        env = {"KUBECONFIG": str(self.sb.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(self.sb.dir)}  # its cache
        p = subprocess.run([self.kubectl, *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"kubectl {' '.join(args)} -> {p.returncode}: {p.stderr}"
        return p.stdout

    def metrics_api_answers(self) -> bool:
        api = self.sb.api()
        try:
            nodes = api.get(METRICS_NODES)
            status = api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{ms.API_SERVICE_NAME}")["status"]
        except (OSError, ApiError):
            return False
        available = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Available") == "True"
        return available and bool(nodes and nodes.get("items"))

    def objects(self) -> dict[tuple[str, str], dict]:
        """(kind, name) -> live object, for every object of the manifest."""
        out = {}
        for doc in yaml.safe_load_all(MANIFEST.read_text()):
            meta = doc["metadata"]
            ns = ["-n", meta["namespace"]] if "namespace" in meta else []
            got = self.k("get", doc["kind"], meta["name"], *ns, "-o", "json", "--show-managed-fields")
            out[(doc["kind"], meta["name"])] = json.loads(got)
        return out


@pytest.fixture(scope="module")
def adoption(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adoption]:
    tmp = tmp_path_factory.mktemp("adopt")
    with running_sandbox(toolchain.bin_dir, tmp) as sb:
        stack = Project.copy(tmp / "project").stack(toolchain, tmp / "backend", "sandbox", sandbox_config(sb))
        try:
            yield Adoption(sb, stack, str(toolchain.bin_dir / "kubectl"))
        finally:
            (tmp / "engine-output.log").write_text("\n".join(stack.outputs))


@pytest.mark.parametrize("how", list(APPLY))
def test_up_adopts_a_hand_applied_metrics_server_in_place(adoption: Adoption, how: str):
    a = adoption
    if a.stack.stack.export_stack().deployment.get("resources"):
        a.stack.destroy(target=[COMPONENT_URN], target_dependents=True)  # the previous case's objects
    a.k(*APPLY[how], str(MANIFEST))
    before = a.objects()
    assert before[("APIService", "v1beta1.metrics.k8s.io")]["spec"]["insecureSkipTLSVerify"] is True

    a.stack.up()

    after = a.objects()
    for key, obj in before.items():
        assert after[key]["metadata"]["uid"] == obj["metadata"]["uid"], f"{key} was deleted and recreated"
        assert after[key]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pulumi", key
    api = after[("APIService", "v1beta1.metrics.k8s.io")]
    assert not api["spec"].get("insecureSkipTLSVerify"), api["spec"]
    ca = base64.b64decode(api["spec"]["caBundle"]).decode()
    assert ca.startswith("-----BEGIN CERTIFICATE-----")
    assert a.stack.stack.outputs()["metricsApiService"].value == "v1beta1.metrics.k8s.io"
    # The metrics API answers through the aggregation layer, now with the caBundle. Polled, not read once:
    # the patched APIService keeps the old install's Available=True until kube-apiserver checks it again
    # (so the waitFor can pass at once), and the sandbox skips the Deployment's rollout await
    # (expectNoPods): `up` can return while the pod runner restarts metrics-server with the new args.
    wait_for(lambda: a.metrics_api_answers(), "the metrics API after the takeover", timeout=90, interval=1)
    (container,) = after[("Deployment", "metrics-server")]["spec"]["template"]["spec"]["containers"]
    assert "--kubelet-insecure-tls" not in container["args"]
    assert f"--tls-cert-file={ms.SERVING_CERT_DIR}/tls.crt" in container["args"]
    owners = {f["manager"] for f in after[("Deployment", "metrics-server")]["metadata"]["managedFields"]
              if "f:args" in json.dumps(f.get("fieldsV1", {}))}
    assert owners and all(m.startswith("pulumi-kubernetes") for m in owners), owners

    result, _, _ = a.stack.preview()
    changes = {op: n for op, n in result.change_summary.items() if op != "same" and n}
    assert changes == {}, f"second preview after adopting ({how}): {changes}"


HELM_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {
        "name": "ms-metrics-server", "namespace": "monitoring",
        "labels": {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": "ms",
                   "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "metrics-server-3.12.2"},
        "annotations": {"meta.helm.sh/release-name": "ms", "meta.helm.sh/release-namespace": "monitoring"},
    },
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": "ms"}},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": "ms"}},
            "spec": {"containers": [{"name": "metrics-server", "image": "registry.k8s.io/metrics-server/metrics-server:v0.9.0"}]},
        },
    },
}


def test_a_helm_release_next_to_it_stops_preview_and_up_naming_the_release(adoption: Adoption, tmp_path: Path):
    """The read before anything is registered, against the real kube-apiserver (label selector, auth)."""
    from pulumi import automation as auto

    a = adoption
    a.k("create", "namespace", "monitoring")
    manifest = tmp_path / "helm-deployment.json"
    manifest.write_text(json.dumps(HELM_DEPLOYMENT))
    a.k("create", "-f", str(manifest))
    try:
        for run in (a.stack.preview, a.stack.up):
            with pytest.raises(auto.CommandError) as info:
                run()
            text = str(info.value)
            assert "installed by Helm: release 'ms' in namespace 'monitoring'" in text, text[-2000:]
            assert "`helm uninstall ms -n monitoring`" in text
    finally:
        a.k("delete", "namespace", "monitoring", "--wait=false")
