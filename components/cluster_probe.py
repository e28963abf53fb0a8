"""Before anything is registered: who serves metrics.k8s.io in this cluster today?

MetricsServer adopts objects with upstream names (a metrics-server applied by hand with kubectl) in
place. What it must never do is take over or duplicate a metrics-server that another tool manages:

* a Helm release (`app.kubernetes.io/managed-by: Helm`, `meta.helm.sh/release-*` annotations, chart
  labels), whatever its object names: adopting it would fight Helm's next upgrade, and deploying a
  second metrics-server next to it would leave two claiming the same APIService;
* an APIService `v1beta1.metrics.k8s.io` that points at another Service than this program's (some
  other install): replacing it would silently reroute the cluster's metrics API.

`preflight()` reads the cluster with the kubeconfig the provider will use (kube_access) and stops the
program with the release or Service, its namespace and the two ways forward. A cluster it cannot read
is a warning in a preview (which needs no cluster; the provider then previews without server-side
checks) and an error in `up`: the provider would fail there anyway, but only after every master's
certs and flags steps had restarted its apiserver; failing first touches nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from components import config, contract, kube_access

APP = "metrics-server"
API_SERVICE = contract.METRICS_API_SERVICE
API_SERVICE_PATH = f"/apis/apiregistration.k8s.io/v1/apiservices/{API_SERVICE}"
NAME_LABEL_SELECTOR = "app.kubernetes.io/name%3Dmetrics-server"
DEPLOYMENTS_PATH = f"/apis/apps/v1/deployments?labelSelector={NAME_LABEL_SELECTOR}"
# The proposed setting for "keep the metrics-server you have" (see the report/docs): this program then
# deploys no metrics-server at all.
KEEP_EXISTING_KEY = f"{contract.NAMESPACE}:metricsServer.manage"

HELM_RELEASE_NAME = "meta.helm.sh/release-name"
HELM_RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"


class ProbeError(Exception):
    """`up` must not go on: an existing metrics-server is managed by someone else, or the cluster
    cannot be read."""


@dataclass(frozen=True)
class HelmRelease:
    name: str
    namespace: str
    objects: tuple[str, ...]  # "Deployment kube-system/metrics-server", ...


def _meta(obj: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    meta = obj.get("metadata") or {}
    return meta.get("labels") or {}, meta.get("annotations") or {}


def _describe(kind: str, obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{kind} {ns}/{meta.get('name')}" if ns else f"{kind} {meta.get('name')}"


def helm_release(obj: dict[str, Any]) -> tuple[str, str] | None:
    """(release, namespace) of an object Helm manages, else None. Helm 3 writes the annotations;
    charts also label `managed-by: Helm`, `app.kubernetes.io/instance` (the release) and `helm.sh/chart`."""
    labels, annotations = _meta(obj)
    helm = (
        HELM_RELEASE_NAME in annotations
        or labels.get(MANAGED_BY, "").lower() in ("helm", "tiller")
        or "helm.sh/chart" in labels
    )
    if not helm:
        return None
    name = annotations.get(HELM_RELEASE_NAME) or labels.get("app.kubernetes.io/instance") or labels.get("release")
    namespace = annotations.get(HELM_RELEASE_NAMESPACE) or (obj.get("metadata") or {}).get("namespace")
    return name or "<unknown release>", namespace or "<unknown namespace>"


def is_ours(obj: dict[str, Any]) -> bool:
    """Made by this program (MetricsServer's labels): a later `up` of the same stack."""
    labels, _ = _meta(obj)
    return labels.get(PART_OF) == contract.NAMESPACE and labels.get(MANAGED_BY) == "pulumi"


def helm_releases(api_service: dict[str, Any] | None, deployments: list[dict[str, Any]]) -> list[HelmRelease]:
    found: dict[tuple[str, str], list[str]] = {}
    for kind, obj in [("APIService", api_service), *(("Deployment", d) for d in deployments)]:
        if obj is None:
            continue
        release = helm_release(obj)
        if release:
            found.setdefault(release, []).append(_describe(kind, obj))
    return [HelmRelease(n, ns, tuple(objs)) for (n, ns), objs in sorted(found.items())]


def foreign_service(api_service: dict[str, Any] | None, namespace: str) -> str | None:
    """'<ns>/<name>' when the APIService exists, is not this program's, and sends metrics.k8s.io to
    another Service than metrics-server in `namespace` (adopting it would reroute the metrics API)."""
    if api_service is None or is_ours(api_service):
        return None
    service = (api_service.get("spec") or {}).get("service")
    if not service:
        return "<local> (no Service: served by kube-apiserver itself)"
    if service.get("namespace") == namespace and service.get("name") == APP:
        return None
    return f"{service.get('namespace')}/{service.get('name')}"


def helm_message(release: HelmRelease) -> str:
    return (
        f"metrics-server is already installed by Helm: release '{release.name}' in namespace "
        f"'{release.namespace}' ({', '.join(release.objects)}). This program neither takes over nor duplicates "
        f"a Helm release, and nothing has been changed. Two ways forward:\n"
        f"    1. `helm uninstall {release.name} -n {release.namespace}`, then `pulumi up` again: it deploys this "
        f"program's own metrics-server (the metrics API is unavailable from the uninstall until `up` is done);\n"
        f"    2. keep the Helm release: `pulumi config set --path {KEEP_EXISTING_KEY} false`, and this program "
        f"deploys no metrics-server"
    )


def foreign_message(service: str, namespace: str) -> str:
    other_ns, _, other_name = service.partition("/")
    # An upstream-shaped install in another namespace has our names there: adoptable in place.
    adopt = (
        f" (or, if it is an upstream-shaped install, set {contract.NAMESPACE}:metricsServer.namespace to {other_ns}: "
        f"`up` then adopts it in place)"
        if other_name == APP else ""
    )
    return (
        f"APIService {API_SERVICE} already exists and sends the metrics API to Service {service}, not to "
        f"{namespace}/{APP}; it was not made by this program or by Helm, and taking it over would reroute the "
        f"cluster's metrics API. Nothing has been changed. Two ways forward:\n"
        f"    1. remove that metrics-server (`kubectl delete apiservice {API_SERVICE}` and the objects of its "
        f"install), then `pulumi up` again{adopt};\n"
        f"    2. keep it: `pulumi config set --path {KEEP_EXISTING_KEY} false`, and this program deploys no "
        f"metrics-server"
    )


def problems(get: Callable[[str], dict[str, Any] | None], namespace: str) -> list[str]:
    """Everything that must stop `up`, read with `get` (a GET that returns None for 404)."""
    api_service = get(API_SERVICE_PATH)
    listed = get(DEPLOYMENTS_PATH) or {}
    named = get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{APP}")
    deployments = list(listed.get("items") or [])
    if named and all((d.get("metadata") or {}).get("uid") != (named.get("metadata") or {}).get("uid")
                     for d in deployments):
        deployments.append(named)
    releases = helm_releases(api_service, deployments)
    out = [helm_message(r) for r in releases]
    service = foreign_service(api_service, namespace)
    if service and not (api_service and helm_release(api_service)):
        out.append(foreign_message(service, namespace))
    return out


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return str(exc)


def _cannot_check(message: str, *, dry_run: bool, warn: Callable[[str], None]) -> None:
    check = f"whether metrics-server is already installed (by Helm or another tool) could not be checked: {message}"
    if dry_run:
        warn(f"{check}; the preview goes on, but `up` stops here unless the cluster can be read")
        return
    raise ProbeError(
        f"{check}. `up` stops before changing anything (every step after the masters needs the cluster): fix "
        f"kubernetes:kubeconfig (or kubernetes:context, $KUBECONFIG) so that it reaches the cluster"
    )


def preflight(
    settings: config.MetricsServer,
    kube: kube_access.KubeSettings,
    *,
    dry_run: bool,
    warn: Callable[[str], None],
) -> None:
    """Raise ProbeError when `up` must stop; `warn` when a preview cannot look."""
    if kube.get("renderYamlToDirectory"):
        return None  # the objects are written as YAML files: no cluster is touched, none to read
    try:
        ep = kube_access.endpoint(kube.get("kubeconfig"), kube.get("context"), kube.get("cluster"))
    except kube_access.KubeAccessError as exc:
        return _cannot_check(str(exc), dry_run=dry_run, warn=warn)
    try:
        found = problems(lambda path: kube_access.get_json(ep, path), settings.namespace)
    except (kube_access.KubeAccessError, OSError, ValueError) as exc:  # HTTP status, refused, TLS, timeout, JSON
        return _cannot_check(f"{ep.server} ({ep.where}): {_reason(exc)}", dry_run=dry_run, warn=warn)
    if found:
        raise ProbeError("\n".join(found))
    return None
