"""cluster_probe: who serves metrics.k8s.io today, read from a fake API server on 127.0.0.1 over real
TLS. A Helm release or another install's APIService stops the program before anything is registered,
with the release, its namespace and the two ways forward; an upstream install made with kubectl (to
be adopted) and this program's own objects do not; a cluster that cannot be read warns in a preview
and stops `up`."""

from __future__ import annotations

import runpy
import socket
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components import cluster_probe as cp
from components import config, kube_access
from tests.support.fake_apiserver import FakeApiServer, make_certs, status
from tests.support.mocks import Mocks, RecordingMonitor
from tests.support.program import config_values

ROOT = Path(__file__).resolve().parents[2]
KEEP = "metrics-aggregation:metricsServer.manage"
NAMED = "/apis/apps/v1/namespaces/kube-system/deployments/metrics-server"


def api_service(namespace: str = "kube-system", name: str = "metrics-server", labels=None, annotations=None):
    return {
        "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io", "labels": labels or {}, "annotations": annotations or {}},
        "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                 "service": {"namespace": namespace, "name": name, "port": 443}},
    }


def deployment(namespace: str, name: str, labels=None, annotations=None, uid: str = "u1"):
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": namespace, "uid": uid,
                                               "labels": labels or {}, "annotations": annotations or {}}}


def deployments(*items):
    return {"kind": "DeploymentList", "items": list(items)}


def helm_meta(release: str, namespace: str) -> tuple[dict, dict]:
    labels = {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": release,
              "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "metrics-server-3.12.2"}
    return labels, {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}


UPSTREAM_LABELS = {"k8s-app": "metrics-server"}
OURS = {"app.kubernetes.io/part-of": "metrics-aggregation", "app.kubernetes.io/managed-by": "pulumi",
        "app.kubernetes.io/name": "metrics-server", "k8s-app": "metrics-server"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def cluster(certs, tmp_path):
    """cluster(routes) -> (server, KubeSettings whose kubernetes:kubeconfig reaches it with a client cert)."""
    servers: list[FakeApiServer] = []

    def make(routes: dict[str, Any]) -> tuple[FakeApiServer, kube_access.KubeSettings]:
        srv = FakeApiServer(certs, routes=routes, require_client_cert=True).__enter__()
        servers.append(srv)
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(srv.url, certs)))
        return srv, kube_access.KubeSettings(values={"kubeconfig": str(path)})

    yield make
    for srv in servers:
        srv.__exit__(None, None, None)


def kubeconfig(url: str, certs) -> dict:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "admin",
        "clusters": [{"name": "c", "cluster": {"server": url, "certificate-authority": str(certs.ca)}}],
        "users": [{"name": "u", "user": {"client-certificate": str(certs.client_cert),
                                         "client-key": str(certs.client_key)}}],
        "contexts": [{"name": "admin", "context": {"cluster": "c", "user": "u"}}],
    }


SETTINGS = config.MetricsServer()


def run_preflight(kube, *, dry_run: bool, namespace: str = "kube-system") -> list[str]:
    warnings: list[str] = []
    cp.preflight(config.MetricsServer(namespace=namespace), kube, dry_run=dry_run, warn=warnings.append)
    return warnings


# --- Helm --------------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("dry_run", [False, True])
def test_helm_release_in_another_namespace_stops_up_and_preview(cluster, dry_run):
    labels, annotations = helm_meta("metrics-server", "monitoring")
    srv, kube = cluster({
        cp.API_SERVICE_PATH: api_service("monitoring", labels=labels, annotations=annotations),
        cp.DEPLOYMENTS_PATH: deployments(deployment("monitoring", "metrics-server", labels, annotations)),
    })
    with pytest.raises(cp.ProbeError) as info:
        run_preflight(kube, dry_run=dry_run)
    text = str(info.value)
    assert "installed by Helm: release 'metrics-server' in namespace 'monitoring'" in text
    assert "APIService v1beta1.metrics.k8s.io, Deployment monitoring/metrics-server" in text
    assert "1. `helm uninstall metrics-server -n monitoring`, then `pulumi up` again" in text
    assert f"2. keep the Helm release: `pulumi config set --path {KEEP} false`" in text
    assert "nothing has been changed" in text
    assert text.count("installed by Helm") == 1  # one release, one message
    assert {p for p, _, cn in srv.requests} == {cp.API_SERVICE_PATH, cp.DEPLOYMENTS_PATH, NAMED}
    assert {cn for _, _, cn in srv.requests} == {"fake-admin"}


@pytest.mark.timeout(30)
def test_helm_release_found_by_its_labels_only_without_an_apiservice(cluster):
    """A chart installed with `apiService.create=false`, an older Helm without the annotations, and a
    release-prefixed name: the chart labels alone name the release."""
    labels = {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": "ms",
              "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "metrics-server-3.12.2"}
    _, kube = cluster({cp.DEPLOYMENTS_PATH: deployments(deployment("observability", "ms-metrics-server", labels))})
    with pytest.raises(cp.ProbeError, match=r"release 'ms' in namespace 'observability' "
                                            r"\(Deployment observability/ms-metrics-server\)"):
        run_preflight(kube, dry_run=False)


@pytest.mark.timeout(30)
def test_helm_release_with_upstream_names_in_our_namespace_is_not_adopted(cluster):
    """Same names as ours (release `metrics-server` in kube-system): patchForce would take it over
    silently; the probe finds it by name even without the name label."""
    _, annotations = helm_meta("metrics-server", "kube-system")
    named = deployment("kube-system", "metrics-server", {"k8s-app": "metrics-server"}, annotations, uid="h1")
    _, kube = cluster({NAMED: named, cp.API_SERVICE_PATH: api_service(annotations=annotations)})
    with pytest.raises(cp.ProbeError, match="`helm uninstall metrics-server -n kube-system`"):
        run_preflight(kube, dry_run=False)


def test_two_releases_give_one_message_each():
    a_labels, a_ann = helm_meta("a", "ns-a")
    b_labels, b_ann = helm_meta("b", "ns-b")
    routes = {cp.DEPLOYMENTS_PATH: deployments(deployment("ns-a", "a-metrics-server", a_labels, a_ann, "1"),
                                               deployment("ns-b", "b-metrics-server", b_labels, b_ann, "2"))}
    found = cp.problems(routes.get, "kube-system")
    assert len(found) == 2 and "release 'a' in namespace 'ns-a'" in found[0] and "helm uninstall b -n ns-b" in found[1]


# --- other installs ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_apiservice_of_another_install_stops_up(cluster):
    _, kube = cluster({cp.API_SERVICE_PATH: api_service("monitoring", "prometheus-adapter")})
    with pytest.raises(cp.ProbeError) as info:
        run_preflight(kube, dry_run=False)
    text = str(info.value)
    assert "sends the metrics API to Service monitoring/prometheus-adapter, not to kube-system/metrics-server" in text
    assert "kubectl delete apiservice v1beta1.metrics.k8s.io" in text and KEEP in text
    assert "metricsServer.namespace" not in text  # another name: not an upstream install to adopt


def test_upstream_install_in_another_namespace_suggests_that_namespace():
    routes = {cp.API_SERVICE_PATH: api_service("monitoring", labels=UPSTREAM_LABELS)}
    (text,) = cp.problems(routes.get, "kube-system")
    assert "sends the metrics API to Service monitoring/metrics-server" in text
    assert "set metrics-aggregation:metricsServer.namespace to monitoring: `up` then adopts it in place" in text


@pytest.mark.timeout(30)
def test_upstream_install_made_with_kubectl_is_left_to_adoption(cluster):
    """The hand-made case the program adopts: upstream names and labels, no Helm, our Service."""
    _, kube = cluster({
        cp.API_SERVICE_PATH: api_service(labels=UPSTREAM_LABELS,
                                         annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"}),
        NAMED: deployment("kube-system", "metrics-server", UPSTREAM_LABELS),
    })
    assert run_preflight(kube, dry_run=False) == []


@pytest.mark.timeout(30)
def test_a_later_up_of_this_program_passes_even_after_a_namespace_change(cluster):
    _, kube = cluster({
        cp.API_SERVICE_PATH: api_service("kube-system", labels=OURS),
        cp.DEPLOYMENTS_PATH: deployments(deployment("kube-system", "metrics-server", OURS)),
    })
    assert run_preflight(kube, dry_run=False, namespace="metrics") == []


@pytest.mark.timeout(30)
def test_an_empty_cluster_passes(cluster):
    srv, kube = cluster({})
    assert run_preflight(kube, dry_run=False) == []
    assert len(srv.requests) == 3


# --- a cluster that cannot be read ---------------------------------------------------------------------


@pytest.fixture
def refused(certs, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    path = tmp_path / "refused.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig(f"https://127.0.0.1:{s.getsockname()[1]}", certs)))
    yield kube_access.KubeSettings(values={"kubeconfig": str(path)})
    s.close()


@pytest.mark.timeout(30)
def test_unreachable_cluster_warns_in_preview(refused):
    (warning,) = run_preflight(refused, dry_run=True)
    assert "could not be checked" in warning and "ConnectionRefusedError" in warning
    assert "the preview goes on, but `up` stops here unless the cluster can be read" in warning


@pytest.mark.timeout(30)
def test_unreachable_cluster_stops_up(refused):
    with pytest.raises(cp.ProbeError) as info:
        run_preflight(refused, dry_run=False)
    text = str(info.value)
    assert "ConnectionRefusedError" in text and "context 'admin'" in text
    assert "`up` stops before changing anything" in text and "fix kubernetes:kubeconfig" in text


@pytest.mark.timeout(30)
def test_forbidden_stops_up_with_the_servers_message(cluster):
    _, kube = cluster({cp.API_SERVICE_PATH: status(403, 'apiservices is forbidden: User "dev" cannot get')})
    with pytest.raises(cp.ProbeError, match=r'HTTP 403: apiservices is forbidden: User "dev" cannot get'):
        run_preflight(kube, dry_run=False)


def test_no_kubeconfig_warns_in_preview_and_stops_up(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    kube = kube_access.KubeSettings()
    (warning,) = run_preflight(kube, dry_run=True)
    assert "no kubeconfig: set kubernetes:kubeconfig" in warning
    with pytest.raises(cp.ProbeError, match="no kubeconfig"):
        run_preflight(kube, dry_run=False)


# --- the program: nothing is registered -------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("preview", [False, True])
def test_main_stops_before_registering_anything(cluster, stack_config, monkeypatch, preview):
    labels, annotations = helm_meta("metrics-server", "monitoring")
    _, kube = cluster({cp.DEPLOYMENTS_PATH: deployments(deployment("monitoring", "metrics-server", labels,
                                                                   annotations))})
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="metrics-aggregation", stack="test", preview=preview, monitor=monitor)
    values = config_values(stack_config())
    values["kubernetes:kubeconfig"] = kube.get("kubeconfig")
    pulumi.runtime.set_all_config(values)
    monkeypatch.chdir(ROOT)
    with pytest.raises(pulumi.RunError, match="release 'metrics-server' in namespace 'monitoring'"):
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
    assert monitor.registrations == []


@pytest.mark.timeout(60)
def test_main_refuses_bad_kubernetes_config_before_registering_anything(stack_config, monkeypatch):
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="metrics-aggregation", stack="test", preview=True, monitor=monitor)
    values = config_values(stack_config())
    values["kubernetes:enableServerSideApply"] = "false"
    values["kubernetes:deleteUnreachable"] = "yes"
    pulumi.runtime.set_all_config(values)
    monkeypatch.chdir(ROOT)
    with pytest.raises(pulumi.RunError) as info:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
    text = str(info.value)
    assert "kubernetes:enableServerSideApply: false cannot be used" in text
    assert "kubernetes:deleteUnreachable: could not be read" in text and "nothing was changed" in text
    assert monitor.registrations == []


def test_render_yaml_to_directory_needs_no_cluster(refused):
    """kubernetes:renderYamlToDirectory writes the objects as files: `up` must not stop on an unreadable
    cluster (nor read one)."""
    rendered = kube_access.KubeSettings(values={**refused.values, "renderYamlToDirectory": "/tmp/out"})
    assert run_preflight(rendered, dry_run=False) == []
