"""metricsServer's scheduling, image, resources, pod metadata and extra-args keys (issue 14): every rule stops
the program with one line naming the key path, the value and the fix; valid values parse to what the
objects use (components/metrics_server.py renders them; test_metrics_server.py checks the objects)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from components import config
from components.config import ConfigError, parse
from tests.unit.conftest import masters

DIGEST = "sha256:" + "ab" * 32


def metrics_server(**keys: Any) -> config.MetricsServer:
    return parse({"masters": masters(1), "ssh": {"agentSocketPath": "/run/agent.sock"},
                  "metricsServer": keys}).metrics_server


def problems(**keys: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        metrics_server(**keys)
    return info.value.problems


TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}

# (case id, metricsServer keys, the key path, the value shown, words of the fix)
BAD = [
    # tolerations
    ("toleration Exists with value", {"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]},
     "tolerations[0].value", "'x'", "remove value, or set operator: Equal"),
    ("toleration empty key with Equal", {"tolerations": [TOLERATION, {"effect": "NoExecute"}]},
     "tolerations[1].operator", "(missing)", "set operator: Exists"),
    ("toleration empty key explicit Equal", {"tolerations": [{"key": "", "operator": "Equal"}]},
     "tolerations[0].operator", "'Equal'", "set operator: Exists"),
    ("toleration seconds without NoExecute", {"tolerations": [{**TOLERATION, "tolerationSeconds": 30}]},
     "tolerations[0].tolerationSeconds", "30", "set effect: NoExecute"),
    ("toleration unknown operator", {"tolerations": [{**TOLERATION, "operator": "In"}]},
     "tolerations[0].operator", "'In'", "'Exists' or 'Equal'"),
    ("toleration unknown effect", {"tolerations": [{**TOLERATION, "effect": "NoRun"}]},
     "tolerations[0].effect", "'NoRun'", "'NoSchedule', 'PreferNoSchedule' or 'NoExecute'"),
    ("toleration unknown field", {"tolerations": [{**TOLERATION, "tolerationSecond": 5}]},
     "tolerations[0].tolerationSecond", "its value is not shown", "not a known key"),
    ("toleration bad key", {"tolerations": [{**TOLERATION, "key": "no spaces"}]},
     "tolerations[0].key", "'no spaces'", "not a Kubernetes label key"),
    ("toleration bad value", {"tolerations": [{**TOLERATION, "value": "-x"}]},
     "tolerations[0].value", "'-x'", "not a Kubernetes label value"),
    ("tolerations not a list", {"tolerations": {"key": "a"}},
     "tolerations", "", "must be a list"),
    # nodeSelector
    ("node selector bad key", {"nodeSelector": {"bad key": "x"}},
     'nodeSelector["bad key"]', "'bad key'", "not a Kubernetes label key"),
    ("node selector bad prefix", {"nodeSelector": {"Example.COM/zone": "a"}},
     'nodeSelector["Example.COM/zone"]', "'Example.COM/zone'", "the prefix a DNS subdomain"),
    ("node selector value too long", {"nodeSelector": {"zone": "a" * 64}},
     "nodeSelector.zone", "'aaaa", "at most 63"),
    ("node selector number", {"nodeSelector": {"zone": 1}}, "nodeSelector.zone", "1", "quote it"),
    ("node selector not a map", {"nodeSelector": ["linux"]}, "nodeSelector", "['linux']",
     "e.g. {kubernetes.io/os: linux}"),
    # affinity
    ("affinity unknown part", {"affinity": {"nodeAfinity": {}}},
     "affinity.nodeAfinity", "its value is not shown", "not a known key"),
    ("affinity part not a map", {"affinity": {"podAntiAffinity": []}},
     "affinity.podAntiAffinity", "[]", "must be a mapping"),
    # topologySpreadConstraints
    ("spread skew zero", {"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "zone",
                                                         "whenUnsatisfiable": "DoNotSchedule"}]},
     "topologySpreadConstraints[0].maxSkew", "0", ">= 1"),
    ("spread empty key", {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "",
                                                         "whenUnsatisfiable": "DoNotSchedule"}]},
     "topologySpreadConstraints[0].topologyKey", "''", "must not be empty"),
    ("spread without when", {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]},
     "topologySpreadConstraints[0].whenUnsatisfiable", "(missing)", "is required"),
    ("spread bad when", {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                                        "whenUnsatisfiable": "Never"}]},
     "topologySpreadConstraints[0].whenUnsatisfiable", "'Never'", "'DoNotSchedule' or 'ScheduleAnyway'"),
    ("spread unknown field", {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                                             "whenUnsatisfiable": "DoNotSchedule", "skew": 1}]},
     "topologySpreadConstraints[0].skew", "its value is not shown", "not a known key"),
    # imagePullSecrets, imageDigest, priorityClassName
    ("pull secret bad name", {"imagePullSecrets": ["Reg_Cred"]}, "imagePullSecrets[0]", "'Reg_Cred'",
     "DNS-1123 subdomain"),
    ("pull secret twice", {"imagePullSecrets": ["regcred", "other", "regcred"]}, "imagePullSecrets[2]",
     "'regcred'", "list each Secret once"),
    ("digest short", {"imageDigest": "sha256:abc"}, "imageDigest", "'sha256:abc'", "64 lowercase hex"),
    ("digest upper case", {"imageDigest": DIGEST.upper().replace("SHA", "sha")}, "imageDigest", "'sha256:ABAB",
     "64 lowercase hex"),
    ("digest other algorithm", {"imageDigest": "sha512:" + "ab" * 32}, "imageDigest", "'sha512:", "sha256:"),
    ("priority class bad", {"priorityClassName": "System-Critical"}, "priorityClassName", "'System-Critical'",
     "DNS-1123 subdomain"),
    ("priority class empty", {"priorityClassName": ""}, "priorityClassName", "''", "DNS-1123 subdomain"),
    # resources
    ("bad quantity", {"resources": {"requests": {"cpu": "100x"}}}, "resources.requests.cpu", "'100x'",
     "not a Kubernetes quantity"),
    ("negative quantity", {"resources": {"limits": {"memory": "-1Gi"}}}, "resources.limits.memory", "'-1Gi'",
     "not a Kubernetes quantity"),
    ("unknown resource", {"resources": {"limits": {"nvidia.com/gpu": 1}}}, 'resources.limits["nvidia.com/gpu"]',
     "its value is not shown", "not a known key"),
    ("unknown resources side", {"resources": {"request": {"cpu": "1"}}}, "resources.request",
     "its value is not shown", "not a known key"),
    ("requests with node count", {"nodeCount": 300, "resources": {"requests": {"cpu": "1"}}}, "resources.requests",
     "{'cpu': '1'}", "remove one: nodeCount to keep these requests, or resources.requests"),
    ("limit below computed request", {"resources": {"limits": {"memory": "100Mi"}}}, "resources.limits.memory",
     "'100Mi'", "below the memory request (200Mi, sized from nodeCount 0)"),
    ("limit below computed request of node count", {"nodeCount": 300, "resources": {"limits": {"cpu": "0.2"}}},
     "resources.limits.cpu", "'0.2'", "below the cpu request (300m, sized from nodeCount 300)"),
    ("limit below given request", {"resources": {"requests": {"ephemeral-storage": "2Gi"},
                                                 "limits": {"ephemeral-storage": "1Gi"}}},
     'resources.limits["ephemeral-storage"]', "'1Gi'", "below the ephemeral-storage request (2Gi, resources.requests)"),
    # podDisruptionBudget
    ("budget blocks one replica", {"podDisruptionBudget": {"minAvailable": 1}}, "podDisruptionBudget.minAvailable",
     "1", "every node drain would block"),
    ("budget percent blocks one replica", {"podDisruptionBudget": {"minAvailable": "1%"}},
     "podDisruptionBudget.minAvailable", "'1%'", "keeps 1 of 1 pods"),
    ("budget max zero", {"replicas": 3, "podDisruptionBudget": {"maxUnavailable": 0}},
     "podDisruptionBudget.maxUnavailable", "0", "with replicas 3"),
    ("budget max zero percent", {"podDisruptionBudget": {"maxUnavailable": "0%"}},
     "podDisruptionBudget.maxUnavailable", "'0%'", "use maxUnavailable: 1"),
    ("budget keeps every replica", {"replicas": 2, "podDisruptionBudget": {"minAvailable": "100%"}},
     "podDisruptionBudget.minAvailable", "'100%'", "keeps 2 of 2 pods"),
    ("budget with both", {"replicas": 2, "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
     "podDisruptionBudget.maxUnavailable", "1", "exactly one of them: remove one"),
    ("budget with neither", {"replicas": 2, "podDisruptionBudget": {}}, "podDisruptionBudget", "(missing)",
     "exactly one of minAvailable or maxUnavailable"),
    ("budget quoted number", {"replicas": 2, "podDisruptionBudget": {"minAvailable": "1"}},
     "podDisruptionBudget.minAvailable", "'1'", "a percentage such as 50%"),
    ("budget over 100%", {"replicas": 2, "podDisruptionBudget": {"maxUnavailable": "150%"}},
     "podDisruptionBudget.maxUnavailable", "'150%'", "a percentage such as 50%"),
    ("budget negative", {"replicas": 2, "podDisruptionBudget": {"maxUnavailable": -1}},
     "podDisruptionBudget.maxUnavailable", "-1", "whole number"),
    ("budget bool", {"replicas": 2, "podDisruptionBudget": {"maxUnavailable": True}},
     "podDisruptionBudget.maxUnavailable", "True", "whole number"),
    # podLabels, podAnnotations
    ("selector label", {"podLabels": {"k8s-app": "other"}}, 'podLabels["k8s-app"]', "'other'",
     "k8s-app is the Deployment's and the Service's selector"),
    ("program label", {"podLabels": {"app.kubernetes.io/managed-by": "helm"}},
     'podLabels["app.kubernetes.io/managed-by"]', "'helm'", "a label this program sets on the pods"),
    ("bad label value", {"podLabels": {"team": "a b"}}, "podLabels.team", "'a b'", "not a Kubernetes label value"),
    ("checksum annotation", {"podAnnotations": {"checksum/serving-cert": "x"}},
     'podAnnotations["checksum/serving-cert"]', "'x'", "everything under checksum/"),
    ("other checksum annotation", {"podAnnotations": {"checksum/config": "x"}},
     'podAnnotations["checksum/config"]', "'x'", "choose another key"),
    ("bad annotation key", {"podAnnotations": {"a/b/c": "x"}}, 'podAnnotations["a/b/c"]', "'a/b/c'",
     "not a Kubernetes annotation key"),
    ("annotation number", {"podAnnotations": {"example.com/n": 5}}, 'podAnnotations["example.com/n"]', "5",
     "quote it"),
    # extraArgs: the flags the program sets, each with the setting to use
    ("arg secure port", {"extraArgs": {"--secure-port": 4443}}, 'extraArgs["--secure-port"]', "4443",
     "set metricsServer.containerPort instead"),
    ("arg cert dir", {"extraArgs": {"--cert-dir": "/certs"}}, 'extraArgs["--cert-dir"]', "'/certs'",
     "the program keeps its own"),
    ("arg tls cert", {"extraArgs": {"--tls-cert-file": "/c.pem"}}, 'extraArgs["--tls-cert-file"]', "'/c.pem'",
     "the program's serving certificate"),
    ("arg tls key", {"extraArgs": {"--tls-private-key-file": "/k.pem"}}, 'extraArgs["--tls-private-key-file"]',
     "'/k.pem'", "the program's serving certificate"),
    ("arg insecure tls", {"extraArgs": {"--kubelet-insecure-tls": True}}, 'extraArgs["--kubelet-insecure-tls"]',
     "True", "set metricsServer.kubeletInsecureTls: true instead"),
    ("arg kubelet ca", {"extraArgs": {"--kubelet-certificate-authority": "/ca"}},
     'extraArgs["--kubelet-certificate-authority"]', "'/ca'", "kubeletCaCertPem or metricsServer.kubeletCaCertFile"),
    ("arg resolution", {"extraArgs": {"--metric-resolution": "30s"}}, 'extraArgs["--metric-resolution"]', "'30s'",
     "set metricsServer.metricResolution instead"),
    ("arg address types", {"extraArgs": {"--kubelet-preferred-address-types": "Hostname"}},
     'extraArgs["--kubelet-preferred-address-types"]', "'Hostname'", "metricsServer.preferredAddressTypes"),
    ("arg node status port", {"extraArgs": {"--kubelet-use-node-status-port": None}},
     'extraArgs["--kubelet-use-node-status-port"]', "(missing)", "the program always sets it"),
    ("arg name without dashes", {"extraArgs": {"v": 2}}, "extraArgs", "'v'", "write it as --name"),
    ("arg name upper case", {"extraArgs": {"--Profiling": True}}, "extraArgs", "'--Profiling'", "lowercase"),
    ("arg name with value", {"extraArgs": {"--v=2": None}}, "extraArgs", "'--v=2'", "not a metrics-server flag"),
    ("arg twice", {"extraArgs": {"--v": 2, "-v": 4}}, 'extraArgs["-v"]', "4", "the same flag as '--v'"),
    ("arg two lines", {"extraArgs": {"--x": "a\nb"}}, 'extraArgs["--x"]', "'a\\nb'", "one line"),
    ("arg tab", {"extraArgs": {"--x": "a\tb"}}, 'extraArgs["--x"]', "'a\\tb'", "without control characters"),
    ("arg list value", {"extraArgs": {"--x": [1, 2]}}, 'extraArgs["--x"]', "[1, 2]", "must be a string or a number"),
    ("arg infinite", {"extraArgs": {"--x": float("inf")}}, 'extraArgs["--x"]', "inf", "must be a string or a number"),
    ("args not a map", {"extraArgs": ["--v=2"]}, "extraArgs", "['--v=2']", "e.g. {--kubelet-request-timeout: 5s"),
    # --kubelet-request-timeout against metricResolution (metrics-server exits at start otherwise)
    ("request timeout equals resolution", {"extraArgs": {"--kubelet-request-timeout": "15s"}},
     'extraArgs["--kubelet-request-timeout"]', "'15s'", "shorter than metricResolution (15s)"),
    ("request timeout longer", {"metricResolution": "1m", "extraArgs": {"--kubelet-request-timeout": "1m30s"}},
     'extraArgs["--kubelet-request-timeout"]', "'1m30s'", "raise metricsServer.metricResolution"),
    ("request timeout not a duration", {"extraArgs": {"--kubelet-request-timeout": 5}},
     'extraArgs["--kubelet-request-timeout"]', "'5'", "a duration such as 5s"),
    ("request timeout alone", {"extraArgs": {"--kubelet-request-timeout": None}},
     'extraArgs["--kubelet-request-timeout"]', "(missing)", "a duration such as 5s"),
    ("resolution at the default timeout", {"metricResolution": "10s"}, "metricResolution", "'10s'",
     "longer than 10s"),
]


@pytest.mark.parametrize("keys, path, value, fix", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_value_names_key_value_and_fix(keys, path, value, fix):
    found = problems(**keys)
    lines = [p for p in found if p.startswith(f"metrics-aggregation:metricsServer.{path}: ")]
    assert len(lines) == 1 and len(found) == 1, found
    assert value in lines[0] and fix in lines[0], lines[0]


def test_every_problem_of_the_new_keys_at_once():
    found = problems(imageDigest="sha256:x", imagePullSecrets=["A"], priorityClassName="X",
                     podLabels={"k8s-app": "x"}, extraArgs={"--secure-port": 1},
                     tolerations=[{"key": "a", "operator": "Exists", "value": "b"}])
    assert len(found) == 6, found


# --- valid values: what the objects get -------------------------------------------------------------


def test_defaults_are_todays_objects_values():
    ms = metrics_server()
    assert ms.tolerations == () and ms.affinity is None and ms.topology_spread_constraints == ()
    assert ms.node_selector == {"kubernetes.io/os": "linux"}
    assert ms.priority_class_name == "system-cluster-critical"
    assert ms.image_pull_secrets == () and ms.image_digest is None and ms.resources is None
    assert ms.pod_disruption_budget is None and ms.pod_annotations == {} and ms.pod_labels == {}
    assert ms.extra_args == {}
    assert config.MetricsServer().tolerations == ()  # the model's own default, without parse


def test_host_network_tolerates_the_control_plane_while_tolerations_is_unset():
    control_plane = config.Toleration(key="node-role.kubernetes.io/control-plane", operator="Exists",
                                      effect="NoSchedule")
    assert metrics_server(hostNetwork=True, containerPort=4443).tolerations == (control_plane,)
    assert metrics_server(hostNetwork=True, containerPort=4443, tolerations=None).tolerations == (control_plane,)
    assert metrics_server(hostNetwork=True, containerPort=4443, tolerations=[]).tolerations == ()
    given = metrics_server(hostNetwork=True, containerPort=4443, tolerations=[TOLERATION]).tolerations
    assert given == (config.Toleration.model_validate(TOLERATION),)
    assert metrics_server(hostNetwork=False).tolerations == ()


def test_valid_tolerations():
    ms = metrics_server(tolerations=[
        {"operator": "Exists"},  # every taint
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
        {"key": "dedicated", "value": "infra"},  # operator defaults to Equal
    ])
    assert [t.key for t in ms.tolerations] == [None, "node.kubernetes.io/not-ready", "dedicated"]


def test_extra_args_become_text_in_the_given_order():
    ms = metrics_server(extraArgs={"--kubelet-request-timeout": "5s", "-v": 2, "--profiling": True,
                                   "--authorization-always-allow-paths": "/metrics,/livez", "--x": None,
                                   "--enable-feature": False, "--ratio": 0.5})
    assert ms.extra_args == {"--kubelet-request-timeout": "5s", "-v": "2", "--profiling": None,
                             "--authorization-always-allow-paths": "/metrics,/livez", "--x": None,
                             "--enable-feature": "false", "--ratio": "0.5"}
    assert list(ms.extra_args) == ["--kubelet-request-timeout", "-v", "--profiling",
                                   "--authorization-always-allow-paths", "--x", "--enable-feature", "--ratio"]


def test_a_shorter_request_timeout_allows_a_shorter_resolution():
    ms = metrics_server(metricResolution="10s", extraArgs={"--kubelet-request-timeout": "9500ms"})
    assert ms.metric_resolution == "10s"
    metrics_server(metricResolution="2m", extraArgs={"--kubelet-request-timeout": "1m59s"})


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5), ("1m30s", 90), ("500ms", Decimal("0.5")), ("0", 0),
                                                ("1.5h", 5400), ("2us", Decimal("0.000002"))])
def test_go_durations(text, seconds):
    assert config.go_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "-5s", "5 s", "s", "5d"])
def test_not_go_durations(text):
    assert config.go_duration_seconds(text) is None


@pytest.mark.parametrize(("text", "value"), [("100m", Decimal("0.1")), ("1", 1), ("0.5", Decimal("0.5")),
                                              ("200Mi", 200 * 2**20), ("1Gi", 2**30), ("1G", 10**9),
                                              ("1e3", 1000), ("128974848", 128974848), (".5", Decimal("0.5"))])
def test_quantities(text, value):
    assert config.quantity_value(text) == value


def test_resources_requests_override_per_resource_and_limits_pass():
    ms = metrics_server(resources={"requests": {"memory": "300Mi"}, "limits": {"memory": "300Mi", "cpu": 1,
                                                                             "ephemeral-storage": "1Gi"}})
    assert ms.resources.requests.given() == {"memory": "300Mi"}
    assert ms.resources.limits.given() == {"memory": "300Mi", "cpu": "1", "ephemeral-storage": "1Gi"}


def test_budgets_that_allow_a_disruption():
    assert metrics_server(podDisruptionBudget={"maxUnavailable": 1}).pod_disruption_budget.field() == (
        "maxUnavailable", 1)
    assert metrics_server(podDisruptionBudget={"minAvailable": 0}).pod_disruption_budget.field() == (
        "minAvailable", 0)
    assert metrics_server(replicas=2, podDisruptionBudget={"minAvailable": "50%"}).pod_disruption_budget.field() == (
        "minAvailable", "50%")
    assert metrics_server(replicas=3, podDisruptionBudget={"maxUnavailable": "10%"}).pod_disruption_budget.field() == (
        "maxUnavailable", "10%")  # rounds up to one pod


def test_valid_maps_and_names():
    ms = metrics_server(nodeSelector={"node-role.kubernetes.io/infra": "", "kubernetes.io/os": "linux"},
                        podLabels={"team": "platform"}, podAnnotations={"example.com/note": "any text: here"},
                        imagePullSecrets=["regcred", "mirror.example"], imageDigest=DIGEST,
                        priorityClassName="high-priority",
                        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
                        topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                                    "whenUnsatisfiable": "ScheduleAnyway",
                                                    "labelSelector": {"matchLabels": {"k8s-app": "metrics-server"}},
                                                    "matchLabelKeys": ["pod-template-hash"]}])
    assert ms.node_selector == {"node-role.kubernetes.io/infra": "", "kubernetes.io/os": "linux"}
    assert ms.image_pull_secrets == ("regcred", "mirror.example") and ms.image_digest == DIGEST
    assert ms.affinity.pod_anti_affinity is None and ms.topology_spread_constraints[0].max_skew == 1
