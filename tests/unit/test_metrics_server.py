"""MetricsServer under Pulumi's mock runtime: objects, args, sizing, HA, trust, awaits, graph, secrets.

The component is evaluated alone with a recording mock monitor (it keeps each registration's parent,
dependencies and secret-ness, which `pulumi.runtime.Mocks` does not see). The tls fakes here return
placeholder PEMs; the real-certificate checks run through the shared harness (tests/support) when it
is present.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from components import config, pki
from components import metrics_server as ms

DEP_TYPE = "test:index:MasterFlags"
DEP_NAME = "k8s-master3-flags"


def fake_pem(kind: str, name: str) -> str:
    body = base64.b64encode(f"{kind}:{name}".encode()).decode()
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


class FakeMocks(pulumi.runtime.Mocks):
    """Echo inputs back as state; tls resources get deterministic placeholder PEMs."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            state["private_key_pem"] = fake_pem("PRIVATE KEY", args.name)
            state["public_key_pem"] = fake_pem("PUBLIC KEY", args.name)
        elif args.typ in (
            "tls:index/selfSignedCert:SelfSignedCert",
            "tls:index/locallySignedCert:LocallySignedCert",
        ):
            state["cert_pem"] = fake_pem("CERTIFICATE", args.name)
        elif args.typ == "tls:index/certRequest:CertRequest":
            state["cert_request_pem"] = fake_pem("CERTIFICATE REQUEST", args.name)
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    dependencies: list[str]
    inputs: dict[str, Any]  # secrets unwrapped
    secret_keys: set[str]  # top-level inputs that were (or contained) secrets
    custom: bool
    provider: str = ""  # "urn::id" of an explicit provider, "" for the default one
    ignore_changes: list[str] = field(default_factory=list)


@dataclass
class Recorded:
    resources: list[Registration] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # urn -> registered outputs

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, k8s_name: str | None = None) -> Registration:
        found = [
            r
            for r in self.of_type(typ)
            if k8s_name is None or r.inputs.get("metadata", {}).get("name") == k8s_name
        ]
        assert len(found) == 1, f"expected one {typ} {k8s_name or ''}, got {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.resources if r.urn == urn)


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks, recorded: Recorded):
        super().__init__(mocks)
        self.recorded = recorded

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = rpc.deserialize_properties(request.object)
            plain = {k: rpc.unwrap_rpc_secret(v) for k, v in raw.items()}
            self.recorded.resources.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    inputs=_unwrap_deep(plain),
                    secret_keys={k for k, v in raw.items() if _contains_secret(v)},
                    custom=request.custom,
                    provider=request.provider,
                    ignore_changes=list(request.ignoreChanges),
                )
            )
        return response

    def RegisterResourceOutputs(self, request):
        self.recorded.outputs[request.urn] = _unwrap_deep(rpc.deserialize_properties(request.outputs))
        return super().RegisterResourceOutputs(request)


def _contains_secret(value: Any) -> bool:
    if rpc.is_rpc_secret(value):
        return True
    if isinstance(value, dict):
        return any(_contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secret(v) for v in value)
    return False


def _unwrap_deep(value: Any) -> Any:
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: _unwrap_deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_deep(v) for v in value]
    return value


@dataclass
class Result:
    recorded: Recorded
    component: ms.MetricsServer
    api_service_name: str
    namespace: str
    serving_ca_cert_pem: str
    dep_urn: str


def evaluate(stack: dict[str, str] | None = None, secret_keys: tuple[str, ...] = (), **overrides: Any) -> Result:
    """The component alone; `stack`: full-key stack config besides the component's settings (the
    `kubernetes:*` keys its provider passes through), replacing whatever an earlier test set."""
    settings = config.MetricsServer.model_validate(overrides)
    recorded = Recorded()
    mocks = FakeMocks()
    pulumi.runtime.set_mocks(
        mocks,
        project="metrics-aggregation",
        stack="unit",
        preview=False,
        monitor=RecordingMonitor(mocks, recorded),
    )
    pulumi.runtime.set_all_config(dict(stack or {}), list(secret_keys))
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        dep = pulumi.CustomResource(DEP_TYPE, DEP_NAME, {})
        component = ms.MetricsServer("metrics-server", settings, depends_on=[dep])
        holder["component"] = component
        return pulumi.Output.all(
            component.api_service_name, component.namespace, component.serving_ca_cert_pem, dep.urn
        ).apply(lambda values: holder.update(values=values))

    program()
    api_service_name, namespace, ca_pem, dep_urn = holder["values"]
    return Result(recorded, holder["component"], api_service_name, namespace, ca_pem, dep_urn)


def secret_data(reg) -> dict[str, str]:
    """The serving Secret's data, decoded."""
    return {k: base64.b64decode(v).decode() for k, v in reg.inputs["data"].items()}


def deployment(result: Result) -> dict[str, Any]:
    return result.recorded.one("kubernetes:apps/v1:Deployment").inputs


def container(result: Result) -> dict[str, Any]:
    (c,) = deployment(result)["spec"]["template"]["spec"]["containers"]
    return c


def args_of(result: Result) -> list[str]:
    return container(result)["args"]


@pytest.fixture(scope="module")
def default() -> Result:
    return evaluate()


# --- objects and names -----------------------------------------------------------------------------


EXPECTED_OBJECTS = {
    ("kubernetes:core/v1:ServiceAccount", "metrics-server", "kube-system"),
    ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "system:aggregated-metrics-reader", None),
    ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "system:metrics-server", None),
    ("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "metrics-server-auth-reader", "kube-system"),
    (
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
        "metrics-server:system:auth-delegator",
        None,
    ),
    ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "system:metrics-server", None),
    ("kubernetes:core/v1:Service", "metrics-server", "kube-system"),
    ("kubernetes:apps/v1:Deployment", "metrics-server", "kube-system"),
    ("kubernetes:core/v1:Secret", ms.SERVING_SECRET_NAME, "kube-system"),
    ("kubernetes:apiregistration.k8s.io/v1:APIService", "v1beta1.metrics.k8s.io", None),
}


def k8s_objects(result: Result) -> set[tuple[str, str, str | None]]:
    return {
        (r.type, r.inputs["metadata"]["name"], r.inputs["metadata"].get("namespace"))
        for r in result.recorded.resources
        if r.type.startswith("kubernetes:")
    }


def test_every_upstream_object_is_present_with_upstream_names(default: Result):
    assert k8s_objects(default) == EXPECTED_OBJECTS


def test_component_type_outputs_and_stable_logical_names(default: Result):
    comp = default.recorded.one(ms.TYPE)
    assert comp.name == "metrics-server"
    assert default.api_service_name == "v1beta1.metrics.k8s.io"
    assert default.namespace == "kube-system"
    names = [r.name for r in default.recorded.resources if r.parent == comp.urn]
    assert len(names) == len(set(names)), "duplicate logical names"
    assert all(n.startswith("metrics-server-") for n in names)
    assert sorted(names) == sorted(r.name for r in evaluate().recorded.resources if r.parent == comp.urn)


def test_rbac_rules_and_bindings(default: Result):
    rec = default.recorded
    reader = rec.one(
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "system:aggregated-metrics-reader"
    )
    for role in ("admin", "edit", "view"):
        assert reader.inputs["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{role}"] == "true"
    assert reader.inputs["rules"] == [
        {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}
    ]
    role = rec.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "system:metrics-server")
    assert role.inputs["rules"] == [
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    ]
    subject = [{"kind": "ServiceAccount", "name": "metrics-server", "namespace": "kube-system"}]
    refs = {
        r.inputs["metadata"]["name"]: (
            r.inputs["roleRef"]["kind"],
            r.inputs["roleRef"]["name"],
            r.inputs["subjects"],
        )
        for r in rec.resources
        if r.type.endswith(("/v1:RoleBinding", "/v1:ClusterRoleBinding"))
    }
    assert refs == {
        "metrics-server-auth-reader": ("Role", "extension-apiserver-authentication-reader", subject),
        "metrics-server:system:auth-delegator": ("ClusterRole", "system:auth-delegator", subject),
        "system:metrics-server": ("ClusterRole", "system:metrics-server", subject),
    }


def test_other_namespace_keeps_auth_reader_binding_in_kube_system():
    result = evaluate(namespace="monitoring")
    rec = result.recorded
    binding = rec.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
    assert binding.inputs["metadata"]["namespace"] == "kube-system"
    assert binding.inputs["subjects"][0]["namespace"] == "monitoring"
    for typ in (
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:core/v1:Service",
        "kubernetes:apps/v1:Deployment",
    ):
        assert rec.one(typ).inputs["metadata"]["namespace"] == "monitoring"
    api = rec.one("kubernetes:apiregistration.k8s.io/v1:APIService").inputs["spec"]["service"]
    assert api == {"name": "metrics-server", "namespace": "monitoring", "port": 443}
    assert result.namespace == "monitoring"
    csr = rec.one("tls:index/certRequest:CertRequest").inputs
    assert csr["dnsNames"] == [
        "metrics-server",
        "metrics-server.monitoring",
        "metrics-server.monitoring.svc",
        "metrics-server.monitoring.svc.cluster.local",
    ]


def test_service_targets_named_https_port(default: Result):
    svc = default.recorded.one("kubernetes:core/v1:Service").inputs
    assert svc["spec"]["selector"] == {"k8s-app": "metrics-server"}
    assert svc["spec"]["ports"] == [
        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https", "appProtocol": "https"}
    ]


def test_labels_on_every_object(default: Result):
    for r in default.recorded.resources:
        if r.type.startswith("kubernetes:"):
            labels = r.inputs["metadata"]["labels"]
            assert labels["k8s-app"] == "metrics-server", r.name
            assert labels["app.kubernetes.io/name"] == "metrics-server", r.name
            assert labels["app.kubernetes.io/managed-by"] == "pulumi", r.name


# --- the Deployment ----------------------------------------------------------------------------------


def test_deployment_hardening_probes_and_image(default: Result):
    dep = deployment(default)
    pod = dep["spec"]["template"]["spec"]
    c = container(default)
    assert c["image"] == "registry.k8s.io/metrics-server/metrics-server:v0.8.1"
    assert dep["spec"]["selector"] == {"matchLabels": {"k8s-app": "metrics-server"}}
    assert dep["spec"]["template"]["metadata"]["labels"]["k8s-app"] == "metrics-server"
    assert pod["serviceAccountName"] == "metrics-server"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
        "initialDelaySeconds": 20,
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "https", "scheme": "HTTPS"}
    assert c["ports"] == [{"name": "https", "containerPort": 10250, "protocol": "TCP"}]
    assert {"name": "tmp-dir", "emptyDir": {}} in pod["volumes"]
    assert {"name": "tmp-dir", "mountPath": "/tmp"} in c["volumeMounts"]
    assert "hostNetwork" not in pod


def test_serving_secret_is_mounted_read_only_and_named_in_args(default: Result):
    pod = deployment(default)["spec"]["template"]["spec"]
    c = container(default)
    assert {"name": "serving-cert", "secret": {"secretName": ms.SERVING_SECRET_NAME}} in pod["volumes"]
    assert {"name": "serving-cert", "mountPath": ms.SERVING_CERT_DIR, "readOnly": True} in c["volumeMounts"]
    args = args_of(default)
    assert f"--tls-cert-file={ms.SERVING_CERT_DIR}/tls.crt" in args
    assert f"--tls-private-key-file={ms.SERVING_CERT_DIR}/tls.key" in args
    secret = default.recorded.one("kubernetes:core/v1:Secret").inputs
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert "stringData" not in secret


def test_default_args_without_kubelet_tls_flags(default: Result):
    assert args_of(default) == [
        "--cert-dir=/tmp",
        "--secure-port=10250",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port",
        "--metric-resolution=15s",
        f"--tls-cert-file={ms.SERVING_CERT_DIR}/tls.crt",
        f"--tls-private-key-file={ms.SERVING_CERT_DIR}/tls.key",
    ]
    assert not any(
        a.startswith(("--kubelet-insecure-tls", "--kubelet-certificate-authority")) for a in args_of(default)
    )
    assert not default.recorded.of_type("kubernetes:core/v1:ConfigMap")


def test_insecure_kubelet_tls_only_when_asked():
    args = args_of(evaluate(kubeletInsecureTls=True))
    assert args.count("--kubelet-insecure-tls") == 1
    assert not any(a.startswith("--kubelet-certificate-authority") for a in args)


KUBELET_CA = fake_pem("CERTIFICATE", "kubelet-ca")


def test_kubelet_ca_is_mounted_and_verified():
    result = evaluate(kubeletCaCertPem=KUBELET_CA)
    args = args_of(result)
    path = f"{ms.KUBELET_CA_DIR}/{ms.KUBELET_CA_KEY}"
    assert f"--kubelet-certificate-authority={path}" in args
    assert "--kubelet-insecure-tls" not in args
    cm = result.recorded.one("kubernetes:core/v1:ConfigMap", ms.KUBELET_CA_CONFIGMAP_NAME).inputs
    assert cm["data"] == {ms.KUBELET_CA_KEY: KUBELET_CA}
    pod = deployment(result)["spec"]["template"]["spec"]
    vol = next(
        v for v in pod["volumes"] if v.get("configMap", {}).get("name") == ms.KUBELET_CA_CONFIGMAP_NAME
    )
    mount = next(m for m in container(result)["volumeMounts"] if m["name"] == vol["name"])
    assert mount == {"name": vol["name"], "mountPath": ms.KUBELET_CA_DIR, "readOnly": True}
    annotations = deployment(result)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/kubelet-ca"] == ms.sha256(KUBELET_CA)


def test_config_values_reach_args():
    args = args_of(
        evaluate(preferredAddressTypes=["Hostname", "InternalIP"], metricResolution="30s", containerPort=4443)
    )
    assert "--kubelet-preferred-address-types=Hostname,InternalIP" in args
    assert "--metric-resolution=30s" in args
    assert "--secure-port=4443" in args


@pytest.mark.parametrize(
    ("nodes", "cpu", "memory"),
    [(0, "100m", "200Mi"), (100, "100m", "200Mi"), (101, "101m", "202Mi"), (350, "350m", "700Mi")],
)
def test_requests_sized_by_node_count(nodes: int, cpu: str, memory: str):
    assert config.sized_requests(nodes) == {"cpu": cpu, "memory": memory}
    assert container(evaluate(nodeCount=nodes))["resources"] == {"requests": {"cpu": cpu, "memory": memory}}


def test_single_replica_has_no_pdb_and_no_anti_affinity(default: Result):
    dep = deployment(default)
    assert dep["spec"]["replicas"] == 1
    assert "affinity" not in dep["spec"]["template"]["spec"]
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}
    assert not default.recorded.of_type("kubernetes:policy/v1:PodDisruptionBudget")


def test_two_replicas_get_pdb_anti_affinity_and_max_unavailable_one():
    result = evaluate(replicas=2)
    dep = deployment(result)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert dep["spec"]["template"]["spec"]["affinity"] == {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"k8s-app": "metrics-server"}},
                    "namespaces": ["kube-system"],
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    pdb = result.recorded.one("kubernetes:policy/v1:PodDisruptionBudget", "metrics-server").inputs
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {"k8s-app": "metrics-server"}}}


def test_host_network_uses_configured_port():
    result = evaluate(hostNetwork=True, containerPort=4443)
    assert deployment(result)["spec"]["template"]["spec"]["hostNetwork"] is True
    c = container(result)
    assert c["ports"] == [{"name": "https", "containerPort": 4443, "protocol": "TCP"}]
    assert "--secure-port=4443" in c["args"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_privileged_port_adds_only_net_bind_service():
    caps = container(evaluate(hostNetwork=True, containerPort=443))["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}


# --- trust: serving CA -> APIService caBundle --------------------------------------------------------


def test_ca_bundle_is_the_serving_ca_and_tls_is_verified(default: Result):
    rec = default.recorded
    api = rec.one("kubernetes:apiregistration.k8s.io/v1:APIService").inputs
    ca = rec.one("tls:index/selfSignedCert:SelfSignedCert")
    ca_pem = fake_pem("CERTIFICATE", ca.name)
    assert default.serving_ca_cert_pem == ca_pem
    assert base64.b64decode(api["spec"]["caBundle"]).decode() == ca_pem
    # explicitly false (an adopted upstream APIService has true, which SSA would otherwise keep)
    assert api["spec"]["insecureSkipTLSVerify"] is False
    assert {k: v for k, v in api["spec"].items() if k not in ("caBundle", "insecureSkipTLSVerify")} == {
        "group": "metrics.k8s.io",
        "version": "v1beta1",
        "groupPriorityMinimum": 100,
        "versionPriority": 100,
        "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
    }
    secret = secret_data(rec.one("kubernetes:core/v1:Secret"))
    assert secret["ca.crt"] == ca_pem
    leaf = rec.one("tls:index/locallySignedCert:LocallySignedCert")
    assert secret["tls.crt"] == fake_pem("CERTIFICATE", leaf.name)


def test_serving_pki_profile(default: Result):
    rec = default.recorded
    ca = rec.one("tls:index/selfSignedCert:SelfSignedCert").inputs
    assert ca["isCaCertificate"] is True
    assert "cert_signing" in ca["allowedUses"]
    leaf = rec.one("tls:index/locallySignedCert:LocallySignedCert").inputs
    assert "server_auth" in leaf["allowedUses"] and "cert_signing" not in leaf["allowedUses"]
    assert leaf["caCertPem"] == fake_pem(
        "CERTIFICATE", rec.one("tls:index/selfSignedCert:SelfSignedCert").name
    )
    csr = rec.one("tls:index/certRequest:CertRequest").inputs
    assert csr["dnsNames"] == [
        "metrics-server",
        "metrics-server.kube-system",
        "metrics-server.kube-system.svc",
        "metrics-server.kube-system.svc.cluster.local",
    ]
    # the leaf has its own key, not the CA's
    assert csr["privateKeyPem"] != ca["privateKeyPem"]


# --- awaits ------------------------------------------------------------------------------------------


def annotations(result: Result, typ: str) -> dict[str, str]:
    return result.recorded.one(typ).inputs["metadata"].get("annotations") or {}


API = "kubernetes:apiregistration.k8s.io/v1:APIService"
FORCE = {"pulumi.com/patchForce": "true"}
DEPLOY = "kubernetes:apps/v1:Deployment"
SVC = "kubernetes:core/v1:Service"


def wait_for_api_service(result: Result) -> dict[str, str]:
    """The APIService's annotations as this program must set them for its serving CA."""
    ca_pem = fake_pem("CERTIFICATE", result.recorded.one("tls:index/selfSignedCert:SelfSignedCert").name)
    digest = hashlib.sha256(ca_pem.encode()).hexdigest()
    fresh = f"jsonpath={{.metadata.annotations['checksum/ca-bundle']}}={digest}"
    return {**FORCE, "checksum/ca-bundle": digest, "pulumi.com/waitFor": json.dumps(["condition=Available", fresh])}


def test_wait_for_available_annotation(default: Result):
    """Available, on the object that carries this caBundle: an adopted APIService is already Available
    before the patch, and a lagging watch cache may show it first (seen on the sandbox: `up` returned at
    once and stored the pre-patch object, so the next preview showed an update)."""
    assert annotations(default, API) == wait_for_api_service(default)
    no_wait = evaluate(waitForAvailable=False)
    assert "pulumi.com/waitFor" not in annotations(no_wait, API)
    assert "checksum/ca-bundle" in annotations(no_wait, API)


def test_the_wait_expression_parses_as_the_provider_parses_it(default: Result):
    """pulumi-kubernetes splits `jsonpath={path}=value` on single '=' signs (keeping '=='): exactly two
    parts, the value a hex digest (base64 caBundle padding would break it)."""
    (available, fresh) = json.loads(annotations(default, API)["pulumi.com/waitFor"])
    assert available == "condition=Available"
    body = fresh.removeprefix("jsonpath=").replace("==", "\0")
    path, value = body.split("=")
    assert path == "{.metadata.annotations['checksum/ca-bundle']}" and re.fullmatch(r"[0-9a-f]{64}", value)


def test_expect_no_pods_skips_await_on_the_deployment_and_service_only():
    result = evaluate(expectNoPods=True)
    assert annotations(result, DEPLOY) == {**FORCE, "pulumi.com/skipAwait": "true"}
    assert annotations(result, SVC) == {**FORCE, "pulumi.com/skipAwait": "true"}  # no pods: no endpoints either
    assert annotations(result, API) == wait_for_api_service(result)
    for r in result.recorded.resources:
        if r.type not in (DEPLOY, SVC) and r.type.startswith("kubernetes:"):
            assert "pulumi.com/skipAwait" not in (r.inputs["metadata"].get("annotations") or {}), r.name


def test_no_skip_await_by_default(default: Result):
    for r in default.recorded.resources:
        if r.type.startswith("kubernetes:"):
            assert "pulumi.com/skipAwait" not in (r.inputs["metadata"].get("annotations") or {}), r.name


# --- graph -------------------------------------------------------------------------------------------


def test_every_resource_depends_on_the_given_dependency(default: Result):
    rec = default.recorded
    comp = rec.one(ms.TYPE)

    def depends(r: Registration) -> bool:
        while True:
            if default.dep_urn in r.dependencies:
                return True
            if not r.parent or r.parent == default.dep_urn:
                return False
            parents = [p for p in rec.resources if p.urn == r.parent]
            if not parents:
                return False
            r = parents[0]

    children = [r for r in rec.resources if r.urn != default.dep_urn and r.type != DEP_TYPE]
    assert comp in children and len(children) > 10
    for r in children:
        assert depends(r), f"{r.type} {r.name} does not wait for {DEP_NAME}"
    # and directly, not only through the component: children pass depends_on themselves
    for r in children:
        if r.parent == comp.urn:
            assert default.dep_urn in r.dependencies, r.name
            assert r.parent == comp.urn


def test_apiservice_is_created_last_and_deleted_first(default: Result):
    rec = default.recorded
    api = rec.one(API)
    k8s_urns = {r.urn for r in rec.resources if r.type.startswith("kubernetes:") and r.type != API}
    assert k8s_urns <= set(api.dependencies)


def test_deployment_waits_for_its_account_secret_and_rbac(default: Result):
    rec = default.recorded
    dep = rec.one(DEPLOY)
    needed = [
        rec.one("kubernetes:core/v1:ServiceAccount").urn,
        rec.one("kubernetes:core/v1:Secret").urn,
        rec.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding").urn,
    ] + [r.urn for r in rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")]
    assert set(needed) <= set(dep.dependencies)


# --- secrets -----------------------------------------------------------------------------------------


def test_private_keys_stay_in_the_secret_and_never_in_outputs(default: Result):
    rec = default.recorded
    key_pems = {fake_pem("PRIVATE KEY", r.name) for r in rec.of_type("tls:index/privateKey:PrivateKey")}
    assert len(key_pems) == 2
    secret = rec.one("kubernetes:core/v1:Secret")
    assert secret_data(secret)["tls.key"] in key_pems
    assert "data" in secret.secret_keys
    for r in rec.resources:
        if r.type.startswith("kubernetes:") and r is not secret:
            text = json.dumps(r.inputs)
            assert "PRIVATE KEY" not in text, f"{r.type} {r.name} carries a private key"
    comp = rec.one(ms.TYPE)
    outputs = json.dumps(rec.outputs[comp.urn])
    assert set(rec.outputs[comp.urn]) == {"apiServiceName", "namespace", "servingCaCertPem"}
    assert "PRIVATE KEY" not in outputs
    for value in (default.api_service_name, default.namespace, default.serving_ca_cert_pem):
        assert "PRIVATE KEY" not in value


def test_serving_cert_change_rolls_the_pods(default: Result):
    leaf = default.recorded.one("tls:index/locallySignedCert:LocallySignedCert")
    annotations = deployment(default)["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"checksum/serving-cert": ms.sha256(fake_pem("CERTIFICATE", leaf.name))}


# --- the whole program (tests/support: real certificates from the tls fakes) -----------------------


def _whole_program(stack_config, **metrics_server: Any):
    from tests.support.program import run

    return run(stack_config(3, metricsServer={"replicas": 2, **metrics_server}))


def _load_cert(pem: str):
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode())


def test_whole_program_serving_chain_is_real_and_matches_the_ca_bundle(stack_config):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    result = _whole_program(stack_config)
    (api,) = result.of_type(API)
    (secret,) = result.of_type("kubernetes:core/v1:Secret")
    ca = _load_cert(base64.b64decode(api.inputs["spec"]["caBundle"]).decode())
    data = secret_data(secret)
    leaf = _load_cert(data["tls.crt"])
    assert _load_cert(data["ca.crt"]) == ca

    leaf.verify_directly_issued_by(ca)  # raises unless the CA signed the leaf
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == list(pki.Service(ms.APP, "kube-system").dns_names)
    assert ca.subject != leaf.subject
    assert ca.not_valid_before_utc <= leaf.not_valid_before_utc
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc

    # the Secret's key is the leaf's key, and it travels as a secret
    key = serialization.load_pem_private_key(data["tls.key"].encode(), password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ) == leaf.public_key().public_bytes(serialization.Encoding.PEM, public)
    assert secret.secret_inputs & {"data", "data.tls.key"}, secret.secret_inputs
    # the aggregator CA (kube-apiserver's proxy client) and the serving CA are different CAs
    aggregator_ca = _load_cert(result.outputs["aggregatorCaCertPem"])
    assert aggregator_ca.subject != ca.subject and aggregator_ca.public_key() != ca.public_key()


def test_whole_program_every_metrics_server_resource_waits_for_every_master(stack_config):
    result = _whole_program(stack_config)
    flags = {r.urn for r in result.of_type("command:remote:Command") if r.name.endswith("-flags")}
    assert len(flags) == 3

    (comp,) = result.of_type(ms.TYPE)
    children = [r for r in result.resources if r.parent == comp.urn]
    assert len(children) >= 15
    for r in [comp, *children]:
        assert flags <= result.waits_for(r), f"{r.type} {r.name} may start before every master is done"
        # and the component passes the program's depends_on to each child itself
        assert set(comp.dependencies) <= set(r.dependencies), r.name


def test_whole_program_outputs_carry_no_private_key(stack_config):
    result = _whole_program(stack_config, kubeletInsecureTls=True)
    assert result.outputs["metricsApiService"] == "v1beta1.metrics.k8s.io"
    assert result.outputs["metricsServerNamespace"] == "kube-system"
    assert "PRIVATE KEY" not in json.dumps(result.outputs, default=str)
    (dep,) = result.of_type(DEPLOY)
    assert "--kubelet-insecure-tls" in dep.inputs["spec"]["template"]["spec"]["containers"][0]["args"]


# --- adoption of an existing (hand-applied) metrics-server ---------------------------------------------

PROVIDER = "pulumi:providers:kubernetes"


def k8s_registrations(result: Result) -> list[Registration]:
    return [r for r in result.recorded.resources if r.type.startswith("kubernetes:")]


def test_every_object_forces_server_side_apply_conflicts(default: Result):
    """The reported failure: a field owned by `kubectl-client-side-apply` (the Deployment's args) made
    the apply conflict. patchForce lets this program's values win, on every object."""
    objects = k8s_registrations(default)
    assert len(objects) == len(EXPECTED_OBJECTS)
    for r in objects:
        assert r.inputs["metadata"]["annotations"][ms.PATCH_FORCE_ANNOTATION] == "true", r.name


def test_every_object_goes_through_the_components_own_upserting_provider(default: Result):
    rec = default.recorded
    comp = rec.one(ms.TYPE)
    provider = rec.one(PROVIDER)
    assert provider.parent == comp.urn and provider.name == "metrics-server-kubernetes"
    assert provider.inputs["upsertExistingObjects"] == "true"  # the SDK sends provider booleans as JSON
    assert provider.inputs["enableServerSideApply"] == "true"
    # no kubernetes:kubeconfig: "" = the provider's own loading rules, as for the default provider
    # (not the SDK's fallback to the program's $KUBECONFIG, which breaks on an `a:b` list)
    assert provider.inputs["kubeconfig"] == ""
    for r in k8s_registrations(default):
        assert r.provider.startswith(provider.urn + "::"), f"{r.name} uses {r.provider or 'the default provider'}"
    for r in rec.resources:
        if r.type.startswith("tls:"):
            assert r.provider == "", f"{r.name}: a Kubernetes provider on a tls resource"


def test_apiservice_sends_insecure_false_but_ignores_its_echo(default: Result):
    api = default.recorded.one(API)
    assert api.inputs["spec"]["insecureSkipTLSVerify"] is False
    assert api.ignore_changes == ["spec.insecureSkipTLSVerify"]
    for r in k8s_registrations(default):
        if r is not api:
            assert r.ignore_changes == [], r.name


def test_unset_kubeconfig_is_not_the_programs_kubeconfig_list(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/a/config:/b/config")
    provider = evaluate().recorded.one(PROVIDER)
    assert provider.inputs["kubeconfig"] == ""


def test_provider_gets_the_stacks_kubernetes_config_as_the_default_provider_would():
    kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\n"
    result = evaluate(
        stack={
            "kubernetes:kubeconfig": kubeconfig,
            "kubernetes:context": "admin@prod",
            "kubernetes:namespace": "tools",
            "kubernetes:deleteUnreachable": "true",
            "kubernetes:kubeClientSettings": json.dumps({"burst": 200, "qps": 100}),
            "kubernetes:clusterIdentifier": "prod-1",
            "metrics-aggregation:unrelated": "x",
        },
        secret_keys=("kubernetes:kubeconfig",),
    )
    provider = result.recorded.one(PROVIDER)
    assert provider.inputs["kubeconfig"] == kubeconfig
    assert "kubeconfig" in provider.secret_keys  # secret in the stack, secret in the provider's state
    assert provider.inputs["context"] == "admin@prod"
    assert provider.inputs["namespace"] == "tools"
    assert provider.inputs["deleteUnreachable"] == "true"
    assert json.loads(provider.inputs["kubeClientSettings"]) == {"burst": 200, "qps": 100}
    assert provider.inputs["clusterIdentifier"] == "prod-1"
    assert "context" not in provider.secret_keys


def test_kubeconfig_text_is_secret_in_the_provider_even_when_the_stack_did_not_say_so(monkeypatch):
    text = "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: abc}}]\n"
    provider = evaluate(stack={"kubernetes:kubeconfig": text}).recorded.one(PROVIDER)
    assert provider.inputs["kubeconfig"] == text and "kubeconfig" in provider.secret_keys
    # a path is not secret; the engine's secret-key list (PULUMI_CONFIG_SECRET_KEYS) is honoured
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["kubernetes:context"]))
    provider = evaluate(stack={"kubernetes:kubeconfig": "/etc/k.conf", "kubernetes:context": "c"}).recorded.one(
        PROVIDER)
    assert provider.secret_keys == {"context"}


def test_a_stack_that_turns_off_server_side_apply_or_upsert_is_refused_naming_the_key():
    with pytest.raises(config.ConfigError) as info:
        evaluate(stack={"kubernetes:enableServerSideApply": "false", "kubernetes:upsertExistingObjects": "false"})
    text = str(info.value)
    assert "kubernetes:enableServerSideApply: false cannot be used" in text
    assert "kubernetes:upsertExistingObjects: false cannot be used" in text
    evaluate(stack={"kubernetes:enableServerSideApply": "true"})  # saying yes explicitly is fine


def test_the_e2e_upstream_manifest_names_exactly_the_objects_this_component_adopts(default: Result):
    """tests/e2e/data/metrics-server-upstream.yaml (the hand-made install of the adoption cases) holds
    the upstream names; every one of them is an object of this component, with the same selector."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "e2e" / "data" / "metrics-server-upstream.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    kinds = {"ServiceAccount": "core/v1", "Service": "core/v1", "Deployment": "apps/v1",
             "ClusterRole": "rbac.authorization.k8s.io/v1", "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
             "RoleBinding": "rbac.authorization.k8s.io/v1", "APIService": "apiregistration.k8s.io/v1"}
    upstream = {(f"kubernetes:{kinds[d['kind']]}:{d['kind']}", d["metadata"]["name"], d["metadata"].get("namespace"))
                for d in docs}
    ours = k8s_objects(default)
    assert upstream <= ours
    assert ours - upstream == {("kubernetes:core/v1:Secret", ms.SERVING_SECRET_NAME, "kube-system")}
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    assert dep["spec"]["selector"]["matchLabels"] == deployment(default)["spec"]["selector"]["matchLabels"]
    (api,) = [d for d in docs if d["kind"] == "APIService"]
    assert api["spec"]["insecureSkipTLSVerify"] is True and "--kubelet-insecure-tls" in dep["spec"]["template"][
        "spec"]["containers"][0]["args"]
