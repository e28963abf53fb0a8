"""hpa-consumer: another project that relies on metrics-aggregation through its stack outputs.

It reads the outputs of `organization/metrics-aggregation/<metricsStack>` with a StackReference (the
fully qualified name a DIY backend gives every stack), refuses to go on when `metricsApiService` is
missing, and deploys a sample Deployment (CPU requests set: a CPU-utilization HPA needs them) with an
autoscaling/v2 HorizontalPodAutoscaler on CPU.

How the outputs are used:
- `metricsApiService` (`v1beta1.metrics.k8s.io`): required. Without it there is no resource metrics API
  and the HPA would only report FailedGetResourceMetric, so the program stops with a message that says
  what to do. With it, the live APIService of that name is read from the cluster (unless
  `verifyApiService: false`), and the Deployment and the HPA depend on that read: they are not
  created on a cluster that has no such APIService (e.g. a kubeconfig pointing at the wrong cluster).
- `metricsServerNamespace`: recorded, with the API service and the source stack, as annotations on the
  Deployment and the HPA, so `kubectl describe hpa` says where its metrics come from.
- `contractVersion`: the outputs contract's semver (absent: 1.0.0). Another major stops the program;
  exported as `metricsContractVersion`.
- `proxyClientCertNotAfter`, `aggregatorCaNotAfter`, `metricsServerServingCaNotAfter`,
  `metricsServerServingCertNotAfter` (RFC 3339, null when that stack does not make the certificate): a
  warning for each that expires within `expiryWarningDays`; their names are exported as `expiringSoon`.
Outputs the metrics-aggregation stack marks secret stay secret here (StackReference keeps the marks).

Config (namespace hpa-consumer): metricsStack (required), namespace (default), appName (php-apache),
image (registry.k8s.io/hpa-example), cpuRequest (200m), cpuLimit (500m), cpuUtilization (50),
minReplicas (1), maxReplicas (5), verifyApiService (true), expectNoPods (false: true only on a control
plane without kubelets, where the Deployment and Service awaits would never finish), expiryWarningDays (30).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

METRICS_PROJECT = "metrics-aggregation"
DIY_ORGANIZATION = "organization"  # the organization part of every stack name on a DIY backend
# The names it reads are metrics-aggregation's contract (its components/contract.py); spelt out here because
# this project is copied and run on its own, and a unit test there holds them equal.
REQUIRED_OUTPUT = "metricsApiService"
NAMESPACE_OUTPUT = "metricsServerNamespace"
VERSION_OUTPUT = "contractVersion"
CONTRACT_MAJOR = 1  # the major of the outputs contract this program is written for (it reads 1.1's names)
# Each expiring certificate, and what whoever reads the warning should do about it.
NOT_AFTER_OUTPUTS = {
    "proxyClientCertNotAfter": ("the proxy-client certificate", "`pulumi up` on that stack renews it"),
    "aggregatorCaNotAfter": ("the aggregator CA", "`up` never renews it: plan a CA rotation"),
    "metricsServerServingCaNotAfter": ("metrics-server's serving CA", "plan its rotation"),
    "metricsServerServingCertNotAfter": ("metrics-server's serving certificate", "`pulumi up` on that stack renews it"),
}
ANNOTATION_PREFIX = "hpa-consumer.metrics-aggregation.io"


# metrics-aggregation's times are RFC 3339 with any fraction and offset (pulumi-tls writes nanoseconds in
# its local zone, e.g. 2027-11-26T17:05:17.750041123-04:00). Python's fromisoformat also takes times without
# an offset and refuses a lowercase t or z, so this is metrics-aggregation's components/rfc3339.py parser,
# copied (this project runs on its own); a unit test there holds the two equal.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d is 0-9 only
)


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 date-time as an aware datetime (its own offset kept); ValueError naming the text."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time (e.g. 2027-12-02T13:24:07Z or "
                         "2027-12-02T13:24:07.123456789+01:00)")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "").ljust(6, "0")[:6])
    offset = dt.timedelta(0)
    if m.group(9):
        sign = 1 if m.group(9) == "+" else -1
        offset = sign * dt.timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
    try:
        return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.timezone(offset))
    except ValueError as e:  # month 13, hour 24, second 60, offset 24:00 ...
        raise ValueError(f"{text!r} is not an RFC 3339 time: {e}") from None


class ConsumerConfigError(pulumi.RunError):
    """The consumer's own config is invalid."""


def stack_reference_name(metrics_stack: str) -> str:
    """`dev` -> `organization/metrics-aggregation/dev`; a fully qualified name is kept as given."""
    parts = metrics_stack.strip().split("/")
    if len(parts) == 1 and parts[0]:
        return f"{DIY_ORGANIZATION}/{METRICS_PROJECT}/{parts[0]}"
    if len(parts) == 3 and all(parts):
        return "/".join(parts)
    raise ConsumerConfigError(
        f"hpa-consumer:metricsStack is {metrics_stack!r}; set it to a stack name such as 'dev' or to "
        f"'{DIY_ORGANIZATION}/{METRICS_PROJECT}/<stack>'"
    )


def require_api_service(reference: str, value: Any) -> str:
    """The metricsApiService output, or a RunError saying why the consumer cannot go on and what to do."""
    if not value:
        raise pulumi.RunError(
            f"stack '{reference}' has no output '{REQUIRED_OUTPUT}': the metrics API (metrics.k8s.io) "
            "that this project's HorizontalPodAutoscaler needs is not deployed by it. Run `pulumi up` on "
            f"that {METRICS_PROJECT} stack first (it exports {REQUIRED_OUTPUT} once metrics-server is "
            "Available), or point hpa-consumer:metricsStack at the stack that deployed it. Nothing was "
            "changed."
        )
    if not isinstance(value, str) or not value.endswith(".metrics.k8s.io"):
        raise pulumi.RunError(
            f"stack '{reference}' exports {REQUIRED_OUTPUT}={value!r}, which is not a metrics.k8s.io "
            "APIService; CPU-utilization HPAs read metrics.k8s.io. Check that the reference names a "
            f"{METRICS_PROJECT} stack. Nothing was changed."
        )
    return value


@dataclass(frozen=True)
class Settings:
    reference: str
    namespace: str
    app: str
    image: str
    cpu_request: str
    cpu_limit: str
    cpu_utilization: int
    min_replicas: int
    max_replicas: int
    verify_api_service: bool
    expect_no_pods: bool
    expiry_warning_days: int = 30


def load_settings(config: pulumi.Config | None = None) -> Settings:
    cfg = config or pulumi.Config()
    s = Settings(
        reference=stack_reference_name(cfg.require("metricsStack")),
        namespace=cfg.get("namespace") or "default",
        app=cfg.get("appName") or "php-apache",
        image=cfg.get("image") or "registry.k8s.io/hpa-example",
        cpu_request=cfg.get("cpuRequest") or "200m",
        cpu_limit=cfg.get("cpuLimit") or "500m",
        cpu_utilization=cfg.get_int("cpuUtilization") or 50,
        min_replicas=cfg.get_int("minReplicas") or 1,
        max_replicas=cfg.get_int("maxReplicas") or 5,
        verify_api_service=cfg.get_bool("verifyApiService") is not False,
        expect_no_pods=cfg.get_bool("expectNoPods") is True,
        expiry_warning_days=30 if cfg.get_int("expiryWarningDays") is None else cfg.get_int("expiryWarningDays"),
    )
    if s.expiry_warning_days < 0:
        raise ConsumerConfigError(
            f"hpa-consumer:expiryWarningDays is {s.expiry_warning_days}; use a number of days >= 0 (0: warn only "
            "once a certificate has expired)"
        )
    if not 1 <= s.cpu_utilization <= 100:
        raise ConsumerConfigError(f"hpa-consumer:cpuUtilization is {s.cpu_utilization}; use 1-100 (percent of the CPU request)")
    if not 1 <= s.min_replicas <= s.max_replicas:
        raise ConsumerConfigError(
            f"hpa-consumer:minReplicas ({s.min_replicas}) must be >= 1 and <= maxReplicas ({s.max_replicas})"
        )
    return s


def require_contract(reference: str, value: Any) -> str:
    """contractVersion, "1.0.0" when the stack predates it; a RunError when its major is not ours."""
    version = value or "1.0.0"
    major = str(version).split(".", 1)[0]
    if not major.isdigit() or int(major) != CONTRACT_MAJOR:
        raise pulumi.RunError(
            f"stack '{reference}' exports {VERSION_OUTPUT}={version!r}; this program reads the "
            f"{CONTRACT_MAJOR}.x outputs of {METRICS_PROJECT}. Update hpa-consumer for that contract "
            f"(see {METRICS_PROJECT}'s docs/contracts.md). Nothing was changed."
        )
    return str(version)


def expiring(times: Mapping[str, Any], now: dt.datetime, days: int) -> tuple[list[str], list[str]]:
    """(warnings, output names) for each *NotAfter in `times` that expires within `days` of `now`; an
    unreadable time is a warning too (expiry cannot be watched). Null: that stack makes no such cert."""
    warnings: list[str] = []
    names: list[str] = []
    for name, (what, action) in NOT_AFTER_OUTPUTS.items():
        value = times.get(name)
        if value is None:
            continue
        try:
            not_after = parse_time(value)
        except ValueError as e:
            warnings.append(f"{name}: {e}; expiry of {what} is not watched")
            continue
        left = not_after - now
        if left <= dt.timedelta(days=days):
            names.append(name)
            when = "expired" if left <= dt.timedelta(0) else f"expires in {left.days} days"
            warnings.append(f"{what} {when} ({name}={value}, hpa-consumer:expiryWarningDays={days}): {action}")
    return warnings, names


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _available(status: Any) -> bool | None:
    """The APIService's Available condition (True/False), None when the status does not say."""
    conditions = _field(status, "conditions") if status is not None else None
    for condition in conditions or []:
        if _field(condition, "type") == "Available":
            return _field(condition, "status") == "True"
    return None


def main() -> dict[str, Any]:
    s = load_settings()
    ref = pulumi.StackReference(METRICS_PROJECT, stack_name=s.reference)
    api_service = ref.get_output(REQUIRED_OUTPUT).apply(lambda v: require_api_service(s.reference, v))
    metrics_namespace = ref.get_output(NAMESPACE_OUTPUT).apply(lambda v: v or "kube-system")
    version = ref.get_output(VERSION_OUTPUT).apply(lambda v: require_contract(s.reference, v))

    def warn_expiring(values: list[Any]) -> list[str]:
        warnings, names = expiring(dict(zip(NOT_AFTER_OUTPUTS, values, strict=True)),
                                   dt.datetime.now(dt.UTC), s.expiry_warning_days)
        for warning in warnings:
            pulumi.log.warn(f"stack '{s.reference}': {warning}", ref)
        return names

    expiring_soon = pulumi.Output.all(*(ref.get_output(n) for n in NOT_AFTER_OUTPUTS)).apply(warn_expiring)

    # Everything below waits for the reference; with verifyApiService also for the live APIService.
    depends_on: list[pulumi.Resource] = [ref]
    api_service = pulumi.Output.all(api_service, version).apply(lambda a: a[0])  # a wrong major stops it all
    available: pulumi.Output[Any] = pulumi.Output.from_input(None)
    if s.verify_api_service:
        live = k8s.apiregistration.v1.APIService.get(
            "metrics-api-service", api_service, opts=pulumi.ResourceOptions(depends_on=[ref])
        )
        depends_on.append(live)

        def check(status: Any) -> bool | None:
            state = _available(status)
            if state is False:
                pulumi.log.warn(
                    "the metrics APIService is not Available: the HPA will report FailedGetResourceMetric "
                    f"until it is (see `kubectl get apiservice` and the {METRICS_PROJECT} README)",
                    live,
                )
            return state

        available = live.status.apply(check)

    annotations = pulumi.Output.all(api_service, metrics_namespace).apply(
        lambda a: {
            f"{ANNOTATION_PREFIX}/metrics-api-service": a[0],
            f"{ANNOTATION_PREFIX}/metrics-server-namespace": a[1],
            f"{ANNOTATION_PREFIX}/metrics-stack": s.reference,
        }
    )
    labels = {"app": s.app}
    # A control plane without kubelets (metrics-aggregation's local sandbox) never runs the pods: there,
    # and only there, the Deployment's and the Service's awaits are skipped.
    no_pods = {"pulumi.com/skipAwait": "true"} if s.expect_no_pods else {}
    deployment = k8s.apps.v1.Deployment(
        s.app,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=s.app, namespace=s.namespace, labels=labels, annotations=annotations.apply(lambda a: {**a, **no_pods})
        ),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            # No `replicas`: the HPA owns the replica count; declaring it would make every `up` fight it.
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                spec=k8s.core.v1.PodSpecArgs(
                    containers=[
                        k8s.core.v1.ContainerArgs(
                            name=s.app,
                            image=s.image,
                            ports=[k8s.core.v1.ContainerPortArgs(container_port=80, name="http")],
                            # CPU utilization is measured against the request: without one the HPA
                            # reports "missing request for cpu" and never scales.
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": s.cpu_request, "memory": "64Mi"},
                                limits={"cpu": s.cpu_limit, "memory": "128Mi"},
                            ),
                        )
                    ]
                ),
            ),
        ),
        opts=pulumi.ResourceOptions(depends_on=depends_on),
    )
    service = k8s.core.v1.Service(
        s.app,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=s.app, namespace=s.namespace, labels=labels, annotations=no_pods or None),
        spec=k8s.core.v1.ServiceSpecArgs(
            selector=labels, ports=[k8s.core.v1.ServicePortArgs(port=80, target_port="http", name="http")]
        ),
        opts=pulumi.ResourceOptions(depends_on=[deployment]),
    )
    hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
        s.app,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=s.app, namespace=s.namespace, labels=labels, annotations=annotations),
        spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
            scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                api_version="apps/v1", kind="Deployment", name=deployment.metadata.name
            ),
            min_replicas=s.min_replicas,
            max_replicas=s.max_replicas,
            metrics=[
                k8s.autoscaling.v2.MetricSpecArgs(
                    type="Resource",
                    resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                        name="cpu",
                        target=k8s.autoscaling.v2.MetricTargetArgs(
                            type="Utilization", average_utilization=s.cpu_utilization
                        ),
                    ),
                )
            ],
        ),
        opts=pulumi.ResourceOptions(depends_on=[deployment, *depends_on]),
    )
    exports: dict[str, Any] = {
        "metricsStack": s.reference,
        "metricsApiService": api_service,
        "metricsServerNamespace": metrics_namespace,
        "metricsApiAvailable": available,
        "metricsContractVersion": version,
        "expiringSoon": expiring_soon,
        "deploymentName": deployment.metadata.name,
        "serviceName": service.metadata.name,
        "hpaName": hpa.metadata.name,
        "namespace": s.namespace,
    }
    for name, value in exports.items():
        pulumi.export(name, value)
    return {"exports": exports, "reference": ref, "deployment": deployment, "service": service, "hpa": hpa}
