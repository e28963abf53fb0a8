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
Outputs the metrics-aggregation stack marks secret stay secret here (StackReference keeps the marks).

Config (namespace hpa-consumer): metricsStack (required), namespace (default), appName (php-apache),
image (registry.k8s.io/hpa-example), cpuRequest (200m), cpuLimit (500m), cpuUtilization (50),
minReplicas (1), maxReplicas (5), verifyApiService (true), expectNoPods (false: true only on a control
plane without kubelets, where the Deployment and Service awaits would never finish).
"""

from __future__ import annotations

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
ANNOTATION_PREFIX = "hpa-consumer.metrics-aggregation.io"


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
    )
    if not 1 <= s.cpu_utilization <= 100:
        raise ConsumerConfigError(f"hpa-consumer:cpuUtilization is {s.cpu_utilization}; use 1-100 (percent of the CPU request)")
    if not 1 <= s.min_replicas <= s.max_replicas:
        raise ConsumerConfigError(
            f"hpa-consumer:minReplicas ({s.min_replicas}) must be >= 1 and <= maxReplicas ({s.max_replicas})"
        )
    return s


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

    # Everything below waits for the reference; with verifyApiService also for the live APIService.
    depends_on: list[pulumi.Resource] = [ref]
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
        "deploymentName": deployment.metadata.name,
        "serviceName": service.metadata.name,
        "hpaName": hpa.metadata.name,
        "namespace": s.namespace,
    }
    for name, value in exports.items():
        pulumi.export(name, value)
    return {"exports": exports, "reference": ref, "deployment": deployment, "service": service, "hpa": hpa}
