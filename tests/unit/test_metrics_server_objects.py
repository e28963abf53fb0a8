"""The issue 14 keys in MetricsServer's objects: a stack without them renders exactly what it rendered before
(fixtures/metrics-server-before-issue-14.json), and each key reaches the Deployment or the PDB as
docs/config.md says. Evaluated with test_metrics_server's recording mock monitor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components import config, errors
from components import metrics_server as ms
from tests.unit.test_metrics_server import KUBELET_CA, container, deployment, evaluate

BEFORE = json.loads((Path(__file__).parent / "fixtures" / "metrics-server-before-issue-14.json").read_text())
# the settings each fixture entry was recorded with
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "replicas-3": {"replicas": 3},
    "host-network": {"hostNetwork": True, "containerPort": 4443, "nodeCount": 250},
    "kubelet-ca": {"kubeletCaCertPem": KUBELET_CA, "namespace": "monitoring", "expectNoPods": True},
}
DEPLOY = "kubernetes:apps/v1:Deployment"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
DIGEST = "sha256:" + "0123456789abcdef" * 4


def objects(**settings: Any) -> dict[str, dict[str, Any]]:
    """Logical name -> inputs of the Deployment and the PDB."""
    result = evaluate(**settings)
    return {r.name: r.inputs for r in result.recorded.resources if r.type in (DEPLOY, PDB)}


def pod(**settings: Any) -> dict[str, Any]:
    return deployment(evaluate(**settings))["spec"]["template"]["spec"]


def pdb(**settings: Any) -> dict[str, Any] | None:
    found = evaluate(**settings).recorded.of_type(PDB)
    assert len(found) <= 1
    return found[0].inputs["spec"] if found else None


@pytest.mark.parametrize("case", [c for c in CASES if c != "host-network"])
def test_a_stack_without_the_new_keys_renders_exactly_the_objects_of_before(case: str):
    assert objects(**CASES[case]) == BEFORE[case]


def test_host_network_differs_from_before_only_by_the_control_plane_toleration():
    """The one deliberate change for an existing stack (docs/config.md, metricsServer.hostNetwork)."""
    now = objects(**CASES["host-network"])
    spec = now["metrics-server-deployment"]["spec"]["template"]["spec"]
    assert spec.pop("tolerations") == [CONTROL_PLANE]
    assert now == BEFORE["host-network"]
    # tolerations: [] keeps the pods exactly as they were
    assert objects(**CASES["host-network"], tolerations=[]) == BEFORE["host-network"]


# --- each key in the objects ---------------------------------------------------------------------------


def test_image_digest_pins_the_image_and_keeps_the_tag():
    c = container(evaluate(imageDigest=DIGEST, image="registry.example/ms", version="v0.8.0"))
    assert c["image"] == f"registry.example/ms:v0.8.0@{DIGEST}"
    assert ms.image(config.MetricsServer(imageDigest=DIGEST)) == (
        f"registry.k8s.io/metrics-server/metrics-server:v0.8.1@{DIGEST}")


def test_image_pull_secrets_are_named_objects():
    assert pod(imagePullSecrets=["regcred", "mirror"])["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]


def test_tolerations_as_given_in_camel_case():
    given = [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoExecute",
              "tolerationSeconds": 30}, {"operator": "Exists"}]
    assert pod(tolerations=given)["tolerations"] == given


def test_host_network_tolerates_the_control_plane_unless_tolerations_are_given():
    assert pod(hostNetwork=True, containerPort=4443)["tolerations"] == [CONTROL_PLANE]
    given = [{"key": "dedicated", "operator": "Exists"}]
    assert pod(hostNetwork=True, containerPort=4443, tolerations=given)["tolerations"] == given


def test_node_selector_replaces_the_default():
    assert pod(nodeSelector={"node-role.kubernetes.io/infra": ""})["nodeSelector"] == {
        "node-role.kubernetes.io/infra": ""}
    assert "nodeSelector" not in pod(nodeSelector={})


def test_affinity_replaces_the_automatic_one():
    node_affinity = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "node_pool", "operator": "In", "values": ["system"]}]}]}}
    assert pod(replicas=2, affinity={"nodeAffinity": node_affinity})["affinity"] == {"nodeAffinity": node_affinity}
    assert pod(affinity={"nodeAffinity": node_affinity})["affinity"] == {"nodeAffinity": node_affinity}
    assert "affinity" not in pod(replicas=2, affinity={})  # {}: none, not the automatic one
    assert "podAntiAffinity" in pod(replicas=2)["affinity"]


def test_topology_spread_constraints_as_given():
    given = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
              "labelSelector": {"matchLabels": {"k8s-app": "metrics-server"}}, "matchLabelKeys": ["pod-template-hash"],
              "minDomains": 2, "nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Ignore"}]
    assert pod(replicas=2, topologySpreadConstraints=given)["topologySpreadConstraints"] == given


def test_priority_class_name():
    assert pod(priorityClassName="high-priority")["priorityClassName"] == "high-priority"


def test_resources_requests_and_limits():
    c = container(evaluate(resources={"requests": {"memory": "300Mi"},
                                      "limits": {"memory": "1Gi", "cpu": "1", "ephemeral-storage": "100Mi"}}))
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "300Mi"},
                              "limits": {"memory": "1Gi", "cpu": "1", "ephemeral-storage": "100Mi"}}
    c = container(evaluate(nodeCount=300, resources={"limits": {"memory": "2Gi"}}))
    assert c["resources"] == {"requests": {"cpu": "300m", "memory": "600Mi"}, "limits": {"memory": "2Gi"}}
    c = container(evaluate(resources={"requests": {"cpu": "250m", "memory": "250Mi"}}))
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "250Mi"}}


def test_pod_labels_and_annotations_are_merged_with_the_programs():
    result = evaluate(podLabels={"team": "platform"}, podAnnotations={"example.com/owner": "platform"},
                      kubeletCaCertPem=KUBELET_CA)
    template = deployment(result)["spec"]["template"]["metadata"]
    assert template["labels"] == {**ms.labels(config.MetricsServer()), "team": "platform"}
    assert template["annotations"]["example.com/owner"] == "platform"
    assert {k for k in template["annotations"] if k.startswith("checksum/")} == {"checksum/serving-cert",
                                                                                 "checksum/kubelet-ca"}
    # the object's own labels and the selector stay the program's
    assert "team" not in deployment(result)["metadata"]["labels"]
    assert deployment(result)["spec"]["selector"] == {"matchLabels": {"k8s-app": "metrics-server"}}


def test_extra_args_follow_the_programs_args_in_the_given_order():
    default_args = ms.container_args(config.MetricsServer())
    args = container(evaluate(extraArgs={"--kubelet-request-timeout": "5s", "-v": 2, "--profiling": True,
                                         "--authorization-always-allow-paths": "/metrics"}))["args"]
    assert args == [*default_args, "--kubelet-request-timeout=5s", "-v=2", "--profiling",
                    "--authorization-always-allow-paths=/metrics"]


@pytest.mark.parametrize(("budget", "replicas", "spec"), [
    ({"maxUnavailable": 1}, 1, {"maxUnavailable": 1}),
    ({"minAvailable": "50%"}, 2, {"minAvailable": "50%"}),
    ({"maxUnavailable": "34%"}, 3, {"maxUnavailable": "34%"}),
    ({"minAvailable": 2}, 3, {"minAvailable": 2}),
])
def test_the_given_budget_replaces_the_default(budget, replicas, spec):
    assert pdb(podDisruptionBudget=budget, replicas=replicas) == {
        **spec, "selector": {"matchLabels": {"k8s-app": "metrics-server"}}}


def test_default_budget_as_before():
    assert pdb() is None
    assert pdb(replicas=2) == {"minAvailable": 1, "selector": {"matchLabels": {"k8s-app": "metrics-server"}}}


# --- the names config refuses are the ones the program sets ------------------------------------------


def test_extra_args_refuse_exactly_the_flags_the_program_sets():
    every = config.MetricsServer.model_validate({"kubeletInsecureTls": True})
    with_ca = config.MetricsServer.model_validate({"kubeletCaCertPem": KUBELET_CA})
    own = {a.split("=", 1)[0] for s in (every, with_ca) for a in ms.container_args(s)}
    assert own == set(errors.METRICS_SERVER_OWN_ARGS)


def test_pod_labels_refuse_exactly_the_labels_the_program_sets():
    assert set(ms.labels(config.MetricsServer())) == set(config.OWN_POD_LABELS)
    assert set(ms.SELECTOR) <= set(config.OWN_POD_LABELS)


def test_the_programs_pod_annotations_are_all_under_the_refused_prefix():
    annotations = ms.pod_annotations(config.MetricsServer.model_validate({"kubeletCaCertPem": KUBELET_CA}), "pem")
    assert annotations and all(k.startswith(config.OWN_POD_ANNOTATION_PREFIX) for k in annotations)
