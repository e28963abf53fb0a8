"""Conformance with metrics-server's Helm chart 3.13.1: for the same values, our Deployment, Service,
PodDisruptionBudget and APIService equal what the chart renders, apart from the differences in
NORMALISATIONS, which docs/helm-chart.md lists in the same order under the same names.

The chart's side is our own test data: tests/unit/data/chart-3.13.1/<case>.yaml, written by hand from
the chart's templates at tag metrics-server-helm-chart-3.13.1 (each file's header names the chart values
it was rendered from). Our side is the component under Pulumi's mocks (tests/unit/test_metrics_server.py
`evaluate`) for CASES[case], the equivalent `metricsServer` stack config. Each normalisation rewrites
our object into the chart's spelling of the same thing and nothing else; the goldens are never edited
by the test, and every normalisation must be needed by at least one case.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import config
from components import metrics_server as ms
from tests.unit.test_metrics_server import evaluate

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "chart-3.13.1"
DOC = ROOT / "docs" / "helm-chart.md"

KUBELET_CA = (  # any PEM certificate block: the program only mounts it and checksums it
    "-----BEGIN CERTIFICATE-----\nQ0VSVElGSUNBVEU6a3ViZWxldC1jYQ==\n-----END CERTIFICATE-----\n"
)

SELECTOR_RULE = {"app.kubernetes.io/name": "metrics-server"}  # a label both sides' pods carry

# metricsServer stack config (camelCase, as in Pulumi.<stack>.yaml) of each golden file.
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "ha": {"replicas": 2, "nodeCount": 300},
    "scheduling": {
        "replicas": 3,
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 30},
        ],
        "nodeSelector": {"kubernetes.io/os": "linux", "pool": "infra"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}
                        ]}
                    ]
                }
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": SELECTOR_RULE},
                                                         "topologyKey": "kubernetes.io/hostname"}}
                ]
            },
        },
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": SELECTOR_RULE}}
        ],
        "priorityClassName": "infra-critical",
        "podDisruptionBudget": {"maxUnavailable": 1},
    },
    "airgapped": {
        "namespace": "monitoring",
        "image": "registry.airgap.internal/mirror/metrics-server",
        "imageDigest": "sha256:bd59850799f14f53fe47c8fb84d4f93b99835497a3dd26fdc6313bed2f55b776",
        "imagePullSecrets": ["airgap-pull", "airgap-pull-backup"],
        "kubeletCaCertPem": KUBELET_CA,
    },
    "tuned": {
        "resources": {"requests": {"cpu": "150m", "memory": "250Mi"},
                      "limits": {"cpu": "500m", "memory": "500Mi"}},
        "podAnnotations": {"example.org/owner": "platform"},
        "podLabels": {"team": "observability", "tier": "cluster-addon"},
        "kubeletInsecureTls": True,
        "extraArgs": {"--kubelet-request-timeout": "5s", "-v": 2,
                      "--authorization-always-allow-paths": "/metrics"},
    },
    "hostnetwork": {
        "hostNetwork": True,
        "containerPort": 4443,
        "metricResolution": "30s",
        "preferredAddressTypes": ["InternalIP", "Hostname"],
    },
}

# the keys issue 14 added, plus hostNetwork/containerPort: the cases together set every one of them
NEW_KEYS = (
    "tolerations", "nodeSelector", "affinity", "topologySpreadConstraints", "imagePullSecrets", "imageDigest",
    "resources", "priorityClassName", "podDisruptionBudget", "podAnnotations", "podLabels", "extraArgs",
    "hostNetwork", "containerPort",
)

KIND_TYPES = {
    "Deployment": "kubernetes:apps/v1:Deployment",
    "Service": "kubernetes:core/v1:Service",
    "PodDisruptionBudget": "kubernetes:policy/v1:PodDisruptionBudget",
    "APIService": "kubernetes:apiregistration.k8s.io/v1:APIService",
}

# what the chart's _helpers.tpl makes of release metrics-server, chart 3.13.1 (appVersion 0.8.1)
CHART_SELECTOR = {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": "metrics-server"}
CHART_LABELS = {
    "helm.sh/chart": "metrics-server-3.13.1",
    **CHART_SELECTOR,
    "app.kubernetes.io/version": "0.8.1",
    "app.kubernetes.io/managed-by": "Helm",
}
CHART_CERT_DIR = "/tmp/tls-certs"  # where the chart mounts an existing serving Secret
CHART_VOLUME_NAMES = {"tmp-dir": "tmp", "serving-cert": "certs"}

# what the program writes for its own use (awaits, adoption, rollouts on a new certificate)
PROGRAM_ANNOTATIONS = frozenset({
    ms.PATCH_FORCE_ANNOTATION, ms.WAIT_FOR_ANNOTATION, ms.CA_BUNDLE_CHECKSUM_ANNOTATION,
    "checksum/serving-cert", "checksum/kubelet-ca",
})


# --- the normalisations: our object -> the chart's spelling of the same thing ----------------------


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def _metadatas(kind: str, obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield obj["metadata"]
    if kind == "Deployment":
        yield obj["spec"]["template"]["metadata"]


def labels(kind: str, obj: dict[str, Any], settings: config.MetricsServer) -> None:
    """The chart's labels and selector in place of ours (k8s-app selector, app.kubernetes.io/* labels)."""
    own = ms.labels(settings)
    if obj["metadata"].get("labels") == own:
        obj["metadata"]["labels"] = dict(CHART_LABELS)
    if kind == "Deployment":  # pod template: the labels, then podLabels; the chart's: selector, podLabels
        template = obj["spec"]["template"]["metadata"]
        if own.items() <= template.get("labels", {}).items():
            extra = {k: v for k, v in template["labels"].items() if k not in own}
            template["labels"] = {**CHART_SELECTOR, **extra}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("matchLabels", "selector") and value == ms.SELECTOR:
                    node[key] = dict(CHART_SELECTOR)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(obj["spec"])


def annotations(kind: str, obj: dict[str, Any], settings: config.MetricsServer) -> None:
    """Without the annotations the program sets for itself."""
    for meta in _metadatas(kind, obj):
        kept = {k: v for k, v in meta.get("annotations", {}).items() if k not in PROGRAM_ANNOTATIONS}
        if kept:
            meta["annotations"] = kept
        else:
            meta.pop("annotations", None)


def insecure_skip_tls_verify(kind: str, obj: dict[str, Any], settings: config.MetricsServer) -> None:
    """Without `insecureSkipTLSVerify: false` (the chart leaves a false value out)."""
    if kind == "APIService" and obj["spec"].get("insecureSkipTLSVerify") is False:
        del obj["spec"]["insecureSkipTLSVerify"]


def serving_cert_volume(kind: str, obj: dict[str, Any], settings: config.MetricsServer) -> None:
    """The chart's volume names and serving-cert directory in place of ours."""
    if kind != "Deployment":
        return
    pod = _pod(obj)
    for volume in pod.get("volumes", []):
        volume["name"] = CHART_VOLUME_NAMES.get(volume["name"], volume["name"])
    for container in pod["containers"]:
        for mount in container.get("volumeMounts", []):
            mount["name"] = CHART_VOLUME_NAMES.get(mount["name"], mount["name"])
            if mount["mountPath"] == ms.SERVING_CERT_DIR:
                mount["mountPath"] = CHART_CERT_DIR
        container["args"] = [
            re.sub(rf"^(--tls-(?:cert|private-key)-file=){re.escape(ms.SERVING_CERT_DIR)}/", rf"\g<1>{CHART_CERT_DIR}/",
                   arg)
            for arg in container["args"]
        ]


def argument_order(kind: str, obj: dict[str, Any], settings: config.MetricsServer) -> None:
    """`--secure-port` first, as the chart writes it; every other argument keeps its place."""
    if kind != "Deployment":
        return
    for container in _pod(obj)["containers"]:
        port = [a for a in container["args"] if a.startswith("--secure-port=")]
        container["args"] = port + [a for a in container["args"] if a not in port]


def api_defaults(kind: str, obj: dict[str, Any], settings: config.MetricsServer) -> None:
    """The API-server defaults the chart spells out: Service type ClusterIP, liveness delay 0."""
    if kind == "Service":
        obj["spec"].setdefault("type", "ClusterIP")
    if kind == "Deployment":
        for container in _pod(obj)["containers"]:
            if "livenessProbe" in container:
                container["livenessProbe"].setdefault("initialDelaySeconds", 0)


@dataclass(frozen=True)
class Normalisation:
    name: str  # as docs/helm-chart.md names it
    apply: Callable[[str, dict[str, Any], config.MetricsServer], None]


NORMALISATIONS = (
    Normalisation("labels and selectors", labels),
    Normalisation("program annotations", annotations),
    Normalisation("insecureSkipTLSVerify: false", insecure_skip_tls_verify),
    Normalisation("serving-cert volume", serving_cert_volume),
    Normalisation("argument order", argument_order),
    Normalisation("API defaults", api_defaults),
)


# --- both sides --------------------------------------------------------------------------------------


def settings_of(case: str) -> config.MetricsServer:
    return config.MetricsServer.model_validate(CASES[case])


@cache
def _rendered(case: str) -> dict[str, dict[str, Any]]:
    recorded = evaluate(**CASES[case]).recorded
    return {kind: r.inputs for kind, typ in KIND_TYPES.items() for r in recorded.of_type(typ)}


def ours(case: str, skip: str | None = None) -> dict[str, dict[str, Any]]:
    """Our four objects (those the case makes) for the case, normalised (all but `skip`)."""
    settings = settings_of(case)
    objects = copy.deepcopy(_rendered(case))
    for kind, obj in objects.items():
        for n in NORMALISATIONS:
            if n.name != skip:
                n.apply(kind, obj, settings)
    return objects


def golden(case: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DATA / f"{case}.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), f"{case}.yaml: one object of each kind"
    return by_kind


def _diff(a: Any, b: Any) -> str:
    dump = lambda x: yaml.safe_dump(_plain(x), sort_keys=True).splitlines()  # noqa: E731
    return "\n".join(difflib.unified_diff(dump(a), dump(b), "ours (normalised)", "chart", lineterm=""))


def _plain(value: Any) -> Any:
    """Whole floats (how the mocks return numbers) as ints, so a diff shows real differences only."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --- the tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_objects_equal_the_charts_after_the_documented_normalisations(case: str):
    mine, theirs = ours(case), golden(case)
    assert sorted(mine) == sorted(theirs), "the same objects (a PodDisruptionBudget on both sides or neither)"
    for kind in theirs:
        assert _plain(mine[kind]) == _plain(theirs[kind]), f"{case}: {kind}\n{_diff(mine[kind], theirs[kind])}"


def test_every_golden_file_has_a_case_and_a_header_naming_its_source():
    assert sorted(p.stem for p in DATA.glob("*.yaml")) == sorted(CASES)
    for case in CASES:
        header = (DATA / f"{case}.yaml").read_text().split("\napiVersion:", 1)[0]
        assert "metrics-server-helm-chart-3.13.1" in header and "Chart values" in header, case
        assert f'CASES["{case}"]' in header, case


@pytest.mark.parametrize("normalisation", NORMALISATIONS, ids=lambda n: n.name)
def test_every_normalisation_is_needed(normalisation: Normalisation):
    """Leaving one out makes some case differ: the list names real differences only."""
    differs = [case for case in CASES if _plain(ours(case, skip=normalisation.name)) != _plain(golden(case))]
    assert differs, f"{normalisation.name!r} changes nothing in any case: drop it here and in {DOC.name}"


def test_the_cases_set_every_new_key():
    assert [k for k in NEW_KEYS if not any(k in c for c in CASES.values())] == []


def _section(title: str) -> str:
    return DOC.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_list_the_same_normalisations_in_the_same_order():
    listed = re.findall(r"^\| \d+ \| \*\*(.+?)\*\* \|", _section("Differences"), flags=re.M)
    assert listed == [n.name for n in NORMALISATIONS]


def test_the_settings_table_has_every_metrics_server_key():
    alias = config.MetricsServer.model_config["alias_generator"].validation_alias
    keys = {f"metricsServer.{alias(name)}" for name in config.MetricsServer.model_fields}
    rows = set(re.findall(r"^\| `(metricsServer\.[A-Za-z]+)` \|", _section("Our settings → chart values"),
                          flags=re.M))
    assert rows == keys, (sorted(keys - rows), sorted(rows - keys))
