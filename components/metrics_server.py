"""MetricsServer: metrics-server as typed Kubernetes objects, served behind a verified APIService.

The objects follow upstream metrics-server `manifests/base` plus the `high-availability` component
(same names, so an existing hand-applied install can be adopted), with three deliberate changes:

* metrics-server's serving certificate comes from a serving CA of its own (pulumi-tls), and that CA is
  the APIService `caBundle`: kube-apiserver verifies metrics-server and `insecureSkipTLSVerify` is
  explicitly false (upstream sets it to true).
* kubelets are verified with `--kubelet-certificate-authority` when the stack gives their CA;
  `--kubelet-insecure-tls` appears only when the stack asks for it explicitly.
* when `waitForAvailable`, the APIService carries pulumi-kubernetes' `pulumi.com/waitFor:
  condition=Available`, so `pulumi up` fails unless `metrics.k8s.io` really answers through the
  aggregation layer (an APIService has no built-in await).

Adoption: the objects go through a provider of this component's own (upsertExistingObjects, Server-
Side Apply) and carry `pulumi.com/patchForce`, so an upstream install made with `kubectl apply`
(client- or server-side) or `kubectl create` is taken over in place, same objects, this program's
values. Someone else's install (Helm, another APIService target) is refused earlier, before anything
is registered (cluster_probe.preflight).

Every child depends on `depends_on` (each master's final flag step): nothing is applied before the
apiservers can authenticate to metrics-server. The APIService depends on every other object, so it
is created last and deleted first (a dangling APIService breaks discovery for the whole cluster).

The only private keys are the serving CA's and the leaf's (pulumi-tls marks them secret); the leaf
key goes into the serving Secret and nowhere else.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel

from components import config, contract, kube_access, pki

TYPE = "metrics-aggregation:k8s:MetricsServer"

APP = "metrics-server"  # the upstream object name of the SA, Service, Deployment, PDB
API_SERVICE_NAME = contract.METRICS_API_SERVICE
API_VERSION, API_GROUP = API_SERVICE_NAME.split(".", 1)
# extension-apiserver-authentication lives in kube-system, so the RoleBinding that lets
# metrics-server read it lives there too, wherever metrics-server itself runs.
AUTH_NAMESPACE = "kube-system"
SELECTOR = {"k8s-app": APP}

# Every object: on a Server-Side Apply conflict (fields another field manager owns, e.g.
# `kubectl-client-side-apply` after a hand-made `kubectl apply`), this program's values win and its
# field manager takes those fields over. Honoured on create and update by 4.25 and 4.34 alike.
PATCH_FORCE_ANNOTATION = "pulumi.com/patchForce"
WAIT_FOR_ANNOTATION = "pulumi.com/waitFor"
WAIT_FOR_AVAILABLE = "condition=Available"
CA_BUNDLE_CHECKSUM_ANNOTATION = "checksum/ca-bundle"
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"
INSECURE_SKIP_TLS_VERIFY_PATH = "spec.insecureSkipTLSVerify"

SERVING_CERT_DIR = "/etc/metrics-server/serving"
KUBELET_CA_DIR = "/etc/metrics-server/kubelet-ca"
KUBELET_CA_KEY = "ca.crt"
SERVING_SECRET_NAME = "metrics-server-serving-cert"
KUBELET_CA_CONFIGMAP_NAME = "metrics-server-kubelet-ca"

RUN_AS_USER = 1000
SERVING_CERT_CHECKSUM = "checksum/serving-cert"
KUBELET_CA_CHECKSUM = "checksum/kubelet-ca"


# --- pure values (no Pulumi): unit-testable and the single source for the objects below -----------


def image(settings: config.MetricsServer) -> str:
    """`<image>:<version>`, pinned `<image>:<version>@<digest>`: the tag stays for readers, the runtime pulls
    by digest."""
    tagged = f"{settings.image}:{settings.version}"
    return f"{tagged}@{settings.image_digest}" if settings.image_digest else tagged


def labels(settings: config.MetricsServer) -> dict[str, str]:
    return {
        **SELECTOR,
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/version": settings.version,
        "app.kubernetes.io/part-of": contract.NAMESPACE,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def pod_labels(settings: config.MetricsServer) -> dict[str, str]:
    """The pod template's labels: metricsServer.podLabels and the program's (which config keeps it from naming)."""
    return {**settings.pod_labels, **labels(settings)}


def pod_annotations(settings: config.MetricsServer, serving_cert_pem: str) -> dict[str, str]:
    """Checksums of what the pod reads from files, so a new cert or kubelet CA rolls the pods, and
    metricsServer.podAnnotations (config keeps them out of checksum/)."""
    kubelet_ca = settings.kubelet_ca_cert_pem
    return {
        SERVING_CERT_CHECKSUM: sha256(serving_cert_pem),
        **({KUBELET_CA_CHECKSUM: sha256(kubelet_ca)} if kubelet_ca else {}),
        **settings.pod_annotations,
    }


def resources(settings: config.MetricsServer) -> dict[str, dict[str, str]]:
    """The container's resources: requests sized from nodeCount, each replaced by a given one; limits as given."""
    given = settings.resources or config.Resources()
    requests = {**config.sized_requests(settings.node_count), **(given.requests.given() if given.requests else {})}
    limits = given.limits.given() if given.limits else {}
    return {"requests": requests, **({"limits": limits} if limits else {})}


def _manifest(model: BaseModel) -> dict[str, object]:
    """A config model as Kubernetes spells it (camelCase, unset fields left out)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def tolerations(settings: config.MetricsServer) -> list[dict[str, object]] | None:
    return [_manifest(t) for t in settings.tolerations or ()] or None


def node_selector(settings: config.MetricsServer) -> dict[str, str] | None:
    return dict(settings.node_selector) or None


def affinity(settings: config.MetricsServer) -> dict[str, object] | None:
    """metricsServer.affinity as given ({}: none), else the automatic one: with more than one replica the
    pods must run on different nodes (a node's loss takes at most one)."""
    if settings.affinity is not None:
        return _manifest(settings.affinity) or None
    if settings.replicas <= 1:
        return None
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": SELECTOR},
                    "namespaces": [settings.namespace],
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }


def topology_spread_constraints(settings: config.MetricsServer) -> list[dict[str, object]] | None:
    return [_manifest(c) for c in settings.topology_spread_constraints] or None


def image_pull_secrets(settings: config.MetricsServer) -> list[dict[str, str]] | None:
    return [{"name": name} for name in settings.image_pull_secrets] or None


def disruption_budget(settings: config.MetricsServer) -> dict[str, int | str] | None:
    """The PodDisruptionBudget's one field: metricsServer.podDisruptionBudget's, else minAvailable 1 with more
    than one replica; None: no PDB (one replica, and no budget given)."""
    if settings.pod_disruption_budget is not None:
        field, value = settings.pod_disruption_budget.field()
        return {field: value}
    return {"minAvailable": 1} if settings.replicas > 1 else None


def container_args(settings: config.MetricsServer) -> list[str]:
    """The program's own flags (components/errors.py METRICS_SERVER_OWN_ARGS: config refuses them in
    extraArgs), then metricsServer.extraArgs in the order given."""
    args = [
        "--cert-dir=/tmp",
        f"--secure-port={settings.container_port}",
        f"--kubelet-preferred-address-types={','.join(settings.preferred_address_types)}",
        "--kubelet-use-node-status-port",
        f"--metric-resolution={settings.metric_resolution}",
        f"--tls-cert-file={SERVING_CERT_DIR}/tls.crt",
        f"--tls-private-key-file={SERVING_CERT_DIR}/tls.key",
    ]
    if settings.kubelet_ca_cert_pem:
        args.append(f"--kubelet-certificate-authority={KUBELET_CA_DIR}/{KUBELET_CA_KEY}")
    if settings.kubelet_insecure_tls:
        args.append("--kubelet-insecure-tls")
    args += [name if value is None else f"{name}={value}" for name, value in settings.extra_args.items()]
    return args


def api_service_annotations(wait_for_available: bool, ca_pem: str) -> dict[str, str]:
    """The APIService's own annotations: the caBundle's checksum and, when waiting, what to wait for.

    `condition=Available` alone is not enough when `up` patches an APIService that already was
    Available (an adopted install): the provider's watch may first deliver the object as it was before
    the patch (a lagging API server cache), which satisfies the condition at once and is then stored as
    the resource's state without this program's changes. Waiting also for the checksum of this caBundle
    makes the await (and the state) start from the patched object."""
    digest = sha256(ca_pem)
    annotations = {CA_BUNDLE_CHECKSUM_ANNOTATION: digest}
    if wait_for_available:
        fresh = f"jsonpath={{.metadata.annotations['{CA_BUNDLE_CHECKSUM_ANNOTATION}']}}={digest}"
        annotations[WAIT_FOR_ANNOTATION] = json.dumps([WAIT_FOR_AVAILABLE, fresh])
    return annotations


def capabilities_to_add(container_port: int) -> list[str]:
    return ["NET_BIND_SERVICE"] if container_port < 1024 else []


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- the objects: one function each ---------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """What every child shares: its parent, its dependencies, the settings and the metadata."""

    name: str
    parent: pulumi.Resource
    depends_on: tuple[pulumi.Resource, ...]
    settings: config.MetricsServer
    provider: pulumi.ProviderResource | None = None

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def child(self, suffix: str) -> str:
        return f"{self.name}-{suffix}"

    def opts(self, *after: pulumi.Resource, ignore_changes: list[str] | None = None) -> pulumi.ResourceOptions:
        """A Kubernetes object's options: this component's own provider."""
        return pulumi.ResourceOptions(
            parent=self.parent,
            depends_on=[*self.depends_on, *after],
            provider=self.provider,
            ignore_changes=ignore_changes,
        )

    def meta(
        self,
        name: str,
        *,
        namespace: str | None = None,
        cluster_scoped: bool = False,
        extra_labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | pulumi.Output[dict[str, str]] | None = None,
    ) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(
            name=name,
            namespace=None if cluster_scoped else (namespace or self.namespace),
            labels={**labels(self.settings), **(extra_labels or {})},
            annotations=(
                annotations.apply(lambda a: {PATCH_FORCE_ANNOTATION: "true", **a})
                if isinstance(annotations, pulumi.Output)
                else {PATCH_FORCE_ANNOTATION: "true", **(annotations or {})}
            ),
        )


@dataclass(frozen=True)
class _ServingPki:
    ca_cert_pem: pulumi.Output[str]
    ca_not_after: pulumi.Output[str]  # RFC 3339
    cert_pem: pulumi.Output[str]
    cert_not_after: pulumi.Output[str]  # RFC 3339
    key_pem: pulumi.Output[str]  # secret


def _serving_pki(s: _Scope) -> _ServingPki:
    """The serving CA of metrics-server's own and the leaf it signs for the Service (pki.TABLE's serving
    rows), after every master like the rest of this component."""
    service = pki.Service(APP, s.namespace)
    ca = pki.issue(pki.SERVING_CA, service, s.name, s.parent, depends_on=s.depends_on)
    leaf = pki.issue(pki.SERVING, service, s.name, s.parent, issuer=ca, depends_on=s.depends_on)
    return _ServingPki(ca_cert_pem=ca.cert_pem, ca_not_after=ca.not_after, cert_pem=leaf.cert_pem,
                       cert_not_after=leaf.not_after, key_pem=pulumi.Output.secret(leaf.key_pem))


def _serving_secret(s: _Scope, serving: _ServingPki) -> k8s.core.v1.Secret:
    return k8s.core.v1.Secret(
        s.child("serving-secret"),
        metadata=s.meta(SERVING_SECRET_NAME),
        type="kubernetes.io/tls",
        # `data`, not `stringData`: stringData does not round-trip under server-side apply.
        data={
            "tls.crt": serving.cert_pem.apply(b64),
            "tls.key": pulumi.Output.secret(serving.key_pem.apply(b64)),
            "ca.crt": serving.ca_cert_pem.apply(b64),
        },
        opts=s.opts(),
    )


def _kubelet_ca_config_map(s: _Scope) -> k8s.core.v1.ConfigMap | None:
    if not s.settings.kubelet_ca_cert_pem:
        return None
    return k8s.core.v1.ConfigMap(
        s.child("kubelet-ca"),
        metadata=s.meta(KUBELET_CA_CONFIGMAP_NAME),
        data={KUBELET_CA_KEY: s.settings.kubelet_ca_cert_pem},
        opts=s.opts(),
    )


def _service_account(s: _Scope) -> k8s.core.v1.ServiceAccount:
    return k8s.core.v1.ServiceAccount(s.child("service-account"), metadata=s.meta(APP), opts=s.opts())


def _subjects(s: _Scope) -> list[k8s.rbac.v1.SubjectArgs]:
    return [k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=APP, namespace=s.namespace)]


def _aggregated_reader_role(s: _Scope) -> k8s.rbac.v1.ClusterRole:
    aggregate = {f"rbac.authorization.k8s.io/aggregate-to-{r}": "true" for r in ("admin", "edit", "view")}
    return k8s.rbac.v1.ClusterRole(
        s.child("aggregated-metrics-reader"),
        metadata=s.meta("system:aggregated-metrics-reader", cluster_scoped=True, extra_labels=aggregate),
        rules=[
            k8s.rbac.v1.PolicyRuleArgs(
                api_groups=[API_GROUP], resources=["pods", "nodes"], verbs=["get", "list", "watch"]
            )
        ],
        opts=s.opts(),
    )


def _metrics_server_role(s: _Scope) -> k8s.rbac.v1.ClusterRole:
    return k8s.rbac.v1.ClusterRole(
        s.child("cluster-role"),
        metadata=s.meta("system:metrics-server", cluster_scoped=True),
        rules=[
            k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["nodes/metrics"], verbs=["get"]),
            k8s.rbac.v1.PolicyRuleArgs(
                api_groups=[""], resources=["pods", "nodes"], verbs=["get", "list", "watch"]
            ),
        ],
        opts=s.opts(),
    )


def _auth_reader_binding(s: _Scope) -> k8s.rbac.v1.RoleBinding:
    return k8s.rbac.v1.RoleBinding(
        s.child("auth-reader"),
        metadata=s.meta("metrics-server-auth-reader", namespace=AUTH_NAMESPACE),
        role_ref=k8s.rbac.v1.RoleRefArgs(
            api_group="rbac.authorization.k8s.io",
            kind="Role",
            name="extension-apiserver-authentication-reader",
        ),
        subjects=_subjects(s),
        opts=s.opts(),
    )


def _cluster_role_binding(
    s: _Scope, suffix: str, name: str, cluster_role: str, *after: pulumi.Resource
) -> k8s.rbac.v1.ClusterRoleBinding:
    return k8s.rbac.v1.ClusterRoleBinding(
        s.child(suffix),
        metadata=s.meta(name, cluster_scoped=True),
        role_ref=k8s.rbac.v1.RoleRefArgs(
            api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_role
        ),
        subjects=_subjects(s),
        opts=s.opts(*after),
    )


def _service(s: _Scope) -> k8s.core.v1.Service:
    return k8s.core.v1.Service(
        s.child("service"),
        metadata=s.meta(APP, annotations=_no_pods_annotations(s)),
        spec=k8s.core.v1.ServiceSpecArgs(
            selector=SELECTOR,
            ports=[
                k8s.core.v1.ServicePortArgs(
                    name="https", port=443, protocol="TCP", target_port="https", app_protocol="https"
                )
            ],
        ),
        opts=s.opts(),
    )


def _probe(path: str, initial_delay_seconds: int | None = None) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port="https", scheme="HTTPS"),
        initial_delay_seconds=initial_delay_seconds,
        period_seconds=10,
        failure_threshold=3,
    )


def _volumes(s: _Scope) -> tuple[list[k8s.core.v1.VolumeArgs], list[k8s.core.v1.VolumeMountArgs]]:
    volumes = [
        k8s.core.v1.VolumeArgs(name="tmp-dir", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
        k8s.core.v1.VolumeArgs(
            name="serving-cert", secret=k8s.core.v1.SecretVolumeSourceArgs(secret_name=SERVING_SECRET_NAME)
        ),
    ]
    mounts = [
        k8s.core.v1.VolumeMountArgs(name="tmp-dir", mount_path="/tmp"),
        k8s.core.v1.VolumeMountArgs(name="serving-cert", mount_path=SERVING_CERT_DIR, read_only=True),
    ]
    if s.settings.kubelet_ca_cert_pem:
        volumes.append(
            k8s.core.v1.VolumeArgs(
                name="kubelet-ca",
                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=KUBELET_CA_CONFIGMAP_NAME),
            )
        )
        mounts.append(
            k8s.core.v1.VolumeMountArgs(name="kubelet-ca", mount_path=KUBELET_CA_DIR, read_only=True)
        )
    return volumes, mounts


def _container(s: _Scope, mounts: list[k8s.core.v1.VolumeMountArgs]) -> k8s.core.v1.ContainerArgs:
    port = s.settings.container_port
    return k8s.core.v1.ContainerArgs(
        name=APP,
        image=image(s.settings),
        image_pull_policy="IfNotPresent",
        args=container_args(s.settings),
        ports=[k8s.core.v1.ContainerPortArgs(name="https", container_port=port, protocol="TCP")],
        readiness_probe=_probe("/readyz", initial_delay_seconds=20),
        liveness_probe=_probe("/livez"),
        resources=resources(s.settings),
        security_context=k8s.core.v1.SecurityContextArgs(
            allow_privilege_escalation=False,
            capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"], add=capabilities_to_add(port) or None),
            read_only_root_filesystem=True,
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
        ),
        volume_mounts=mounts,
    )


def _no_pods_annotations(s: _Scope) -> dict[str, str] | None:
    """A cluster without kubelets (the sandbox) never runs the pods: the Deployment's await (ready
    replicas) and the Service's (endpoints from ready pods) are skipped there, and only there. The
    APIService's Available wait stays: it proves the aggregation path whatever serves it."""
    return {SKIP_AWAIT_ANNOTATION: "true"} if s.settings.expect_no_pods else None


def _deployment(s: _Scope, serving: _ServingPki, *after: pulumi.Resource) -> k8s.apps.v1.Deployment:
    volumes, mounts = _volumes(s)
    return k8s.apps.v1.Deployment(
        s.child("deployment"),
        metadata=s.meta(APP, annotations=_no_pods_annotations(s)),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=s.settings.replicas,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=SELECTOR),
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                    max_unavailable=1 if s.settings.replicas > 1 else 0
                ),
            ),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    labels=pod_labels(s.settings),
                    annotations=serving.cert_pem.apply(lambda pem: pod_annotations(s.settings, pem)),
                ),
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=APP,
                    priority_class_name=s.settings.priority_class_name,
                    node_selector=node_selector(s.settings),
                    host_network=s.settings.host_network or None,
                    affinity=affinity(s.settings),
                    tolerations=tolerations(s.settings),
                    topology_spread_constraints=topology_spread_constraints(s.settings),
                    image_pull_secrets=image_pull_secrets(s.settings),
                    containers=[_container(s, mounts)],
                    volumes=volumes,
                ),
            ),
        ),
        opts=s.opts(*after),
    )


def _pod_disruption_budget(s: _Scope) -> k8s.policy.v1.PodDisruptionBudget | None:
    budget = disruption_budget(s.settings)
    if budget is None:
        return None
    return k8s.policy.v1.PodDisruptionBudget(
        s.child("pdb"),
        metadata=s.meta(APP),
        spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
            min_available=budget.get("minAvailable"),
            max_unavailable=budget.get("maxUnavailable"),
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=SELECTOR),
        ),
        opts=s.opts(),
    )


def _api_service(s: _Scope, serving: _ServingPki, *after: pulumi.Resource) -> k8s.apiregistration.v1.APIService:
    wait = s.settings.wait_for_available
    annotations = serving.ca_cert_pem.apply(lambda pem: api_service_annotations(wait, pem))
    return k8s.apiregistration.v1.APIService(
        s.child("apiservice"),
        metadata=s.meta(API_SERVICE_NAME, cluster_scoped=True, annotations=annotations),
        spec=k8s.apiregistration.v1.APIServiceSpecArgs(
            group=API_GROUP,
            version=API_VERSION,
            group_priority_minimum=100,
            version_priority=100,
            service=k8s.apiregistration.v1.ServiceReferenceArgs(name=APP, namespace=s.namespace, port=443),
            ca_bundle=serving.ca_cert_pem.apply(b64),
            # Explicitly false, not left out: an adopted upstream APIService has `true` from its
            # `kubectl apply`, and under Server-Side Apply a field this program does not send keeps
            # its other owner's value (and true next to a caBundle is rejected). Sent as false, the
            # forced apply takes the field over.
            insecure_skip_tls_verify=False,
        ),
        # The API server drops a false insecureSkipTLSVerify from what it returns (omitempty), so the
        # provider's diff would report `false` as added on every preview; the create above still sends
        # it, and later updates send the value from state.
        opts=s.opts(*after, ignore_changes=[INSECURE_SKIP_TLS_VERIFY_PATH]),
    )


def kube_provider(
    name: str, kube: kube_access.KubeSettings, parent: pulumi.Resource, deps: tuple[pulumi.Resource, ...]
) -> k8s.Provider:
    """The provider of every Kubernetes object here: the stack's `kubernetes:*` config, plus Server-Side
    Apply and upsertExistingObjects, so that `up` adopts a hand-applied metrics-server in place (4.29+
    fails a create of an existing object with AlreadyExists otherwise). docs/kubernetes-provider.md."""
    return k8s.Provider(
        name, **kube_access.provider_args(kube), opts=pulumi.ResourceOptions(parent=parent, depends_on=list(deps))
    )


class MetricsServer(pulumi.ComponentResource):
    """metrics-server and its APIService `v1beta1.metrics.k8s.io`, verified both ways."""

    api_service_name: pulumi.Output[str]
    namespace: pulumi.Output[str]
    serving_ca_cert_pem: pulumi.Output[str]
    serving_ca_not_after: pulumi.Output[str]  # RFC 3339
    serving_cert_not_after: pulumi.Output[str]  # RFC 3339
    # how the pods run, from the settings (the outputs firewall and NetworkPolicy projects read)
    image: str  # the reference the Deployment runs, with the digest when pinned
    host_network: bool
    port: int  # containerPort: where the pods listen (on the node's network with hostNetwork)

    def __init__(
        self,
        name: str,
        settings: config.MetricsServer,
        *,
        depends_on: Sequence[pulumi.Resource],
        kube: kube_access.KubeSettings | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        deps = tuple(depends_on)
        super().__init__(
            TYPE,
            name,
            None,
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(deps))),
        )
        provider = kube_provider(f"{name}-kubernetes", kube or kube_access.read_settings(), self, deps)
        s = _Scope(name=name, parent=self, depends_on=deps, settings=settings, provider=provider)

        serving = _serving_pki(s)
        secret = _serving_secret(s, serving)
        kubelet_ca = _kubelet_ca_config_map(s)
        account = _service_account(s)
        reader = _aggregated_reader_role(s)
        role = _metrics_server_role(s)
        auth_reader = _auth_reader_binding(s)
        delegator = _cluster_role_binding(
            s, "auth-delegator", "metrics-server:system:auth-delegator", "system:auth-delegator"
        )
        role_binding = _cluster_role_binding(
            s, "cluster-role-binding", "system:metrics-server", "system:metrics-server", role
        )
        service = _service(s)
        runs_with = [r for r in (account, secret, kubelet_ca, auth_reader, delegator, role_binding) if r]
        deployment = _deployment(s, serving, *runs_with)
        pdb = _pod_disruption_budget(s)
        # Last in, first out: the APIService goes only when everything behind it is in place.
        everything = [r for r in (*runs_with, reader, role, service, deployment, pdb) if r]
        api_service = _api_service(s, serving, *everything)

        self.api_service_name = api_service.metadata.apply(lambda m: m.name)
        self.namespace = deployment.metadata.apply(lambda m: m.namespace)
        self.serving_ca_cert_pem = serving.ca_cert_pem
        self.serving_ca_not_after = serving.ca_not_after
        self.serving_cert_not_after = serving.cert_not_after
        self.image = image(settings)
        self.host_network = settings.host_network
        self.port = settings.container_port
        self.register_outputs(
            {
                "apiServiceName": self.api_service_name,
                "namespace": self.namespace,
                "servingCaCertPem": self.serving_ca_cert_pem,
                "servingCaNotAfter": self.serving_ca_not_after,
                "servingCertNotAfter": self.serving_cert_not_after,
            }
        )
