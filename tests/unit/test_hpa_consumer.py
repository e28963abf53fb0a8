"""examples/hpa-consumer: the StackReference consumer under pulumi mocks.

The reference is mocked at the engine boundary: `pulumi.StackReference` registers a read of type
`pulumi:pulumi:StackReference` (id = the referenced stack's name, input `name`), and its state is
`{"outputs": {...}, "secretOutputNames": [...]}` (pulumi/stack_reference.py: the `outputs` and
`secret_output_names` properties, translated from `secretOutputNames`).
"""

from __future__ import annotations

import datetime as dt
import gc
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import config as pulumi_config
from pulumi.runtime.settings import SETTINGS

from components import contract

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hpa-consumer"

_spec = importlib.util.spec_from_file_location("hpa_consumer_example", EXAMPLE / "hpa_consumer.py")
consumer = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = consumer
_spec.loader.exec_module(consumer)

OUTPUTS = {
    "aggregatorCaCertPem": "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n",
    "proxyClientCertPem": "-----BEGIN CERTIFICATE-----\nMIIC...\n-----END CERTIFICATE-----\n",
    "proxyClientCertNotAfter": "2027-11-26T14:40:00Z",
    "requestheaderAllowedNames": ["aggregator"],
    "apiserverFlags": {"--requestheader-allowed-names": "aggregator", "--enable-aggregator-routing": "true"},
    "masters": [{"name": "k8s-master", "address": "10.0.0.101"}],
    "metricsApiService": "v1beta1.metrics.k8s.io",
    "metricsServerNamespace": "kube-system",
    "aggregatorCaNotAfter": "2036-11-24T14:40:00.123456789+01:00",
    "metricsServerServingCaCertPem": "-----BEGIN CERTIFICATE-----\nMIID...\n-----END CERTIFICATE-----\n",
    "metricsServerServingCaNotAfter": "2036-11-24T14:40:00Z",
    "metricsServerServingCertNotAfter": "2027-11-26T14:40:00.5Z",
    "contractVersion": "1.1.0",
    "metricsServerImage": "registry.k8s.io/metrics-server/metrics-server:v0.8.1",
    "metricsServerHostNetwork": False,
    "metricsServerPort": 10250,
}


OUTPUTS_1_0_0 = list(OUTPUTS)[:8]


class Mocks(pulumi.runtime.Mocks):
    def __init__(self, outputs: dict[str, Any], secret_names: list[str], available: str | None = "True"):
        self.outputs = outputs
        self.secret_names = secret_names
        self.available = available
        self.resources: dict[tuple[str, str], pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources[(args.typ, args.name)] = args
        if args.typ == "pulumi:pulumi:StackReference":
            return args.resource_id, {
                "name": args.inputs["name"],
                "outputs": self.outputs,
                "secretOutputNames": self.secret_names,
            }
        if args.typ == "kubernetes:apiregistration.k8s.io/v1:APIService" and args.resource_id:
            status = {} if self.available is None else {
                "conditions": [{"type": "Available", "status": self.available, "reason": "Passed"}]
            }
            return args.resource_id, {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": args.resource_id},
                "spec": {"group": "metrics.k8s.io", "version": "v1beta1"},
                "status": status,
            }
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}, None


@pytest.fixture
def program():
    """program(outputs, secret_names=(), **config) -> (mocks, run) where run(check) runs the consumer."""
    saved = dict(pulumi_config.CONFIG.get())

    def make(outputs=None, secret_names=(), available="True", **config):
        mocks = Mocks(dict(OUTPUTS if outputs is None else outputs), list(secret_names), available)
        pulumi.runtime.set_mocks(mocks, project="hpa-consumer", stack="dev", preview=False)
        config.setdefault("metricsStack", "dev")
        for key, value in config.items():
            pulumi.runtime.set_config(f"hpa-consumer:{key}", str(value))

        def run(check):
            @pulumi.runtime.test
            def body():
                result = consumer.main()
                return check(result)

            body()

        return mocks, run

    yield make
    current = pulumi_config.CONFIG.get()
    current.clear()
    current.update(saved)
    # Finalize the coroutines the mocked engine leaves behind now, at a safe point: collected later,
    # inside a compile() of an AST object, they trip CPython 3.11.7's "AST constructor recursion depth
    # mismatch" SystemError (fixed in 3.11.8).
    gc.collect()


def test_reads_the_diy_stack_and_deploys_cpu_hpa(program):
    mocks, run = program()
    seen = {}

    def check(result):
        e = result["exports"]
        hpa, dep = result["hpa"], result["deployment"]
        return pulumi.Output.all(
            e["metricsApiService"], e["metricsServerNamespace"], e["metricsApiAvailable"], hpa.spec, dep.spec,
            hpa.metadata, dep.metadata,
        ).apply(lambda v: seen.update(zip(["api", "ns", "available", "hpa", "dep", "hpa_meta", "dep_meta"], v, strict=True)))

    run(check)
    ref = mocks.resources[("pulumi:pulumi:StackReference", "metrics-aggregation")]
    assert ref.inputs["name"] == "organization/metrics-aggregation/dev"
    assert ref.resource_id == "organization/metrics-aggregation/dev"
    assert seen["api"] == "v1beta1.metrics.k8s.io" and seen["ns"] == "kube-system"
    assert seen["available"] is True

    spec = seen["hpa"]
    assert spec["scale_target_ref"] == {"api_version": "apps/v1", "kind": "Deployment", "name": "php-apache"}
    assert (spec["min_replicas"], spec["max_replicas"]) == (1, 5)
    [metric] = spec["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "average_utilization": 50}
    assert mocks.resources[("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "php-apache")]

    container = seen["dep"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "200m"
    assert "replicas" not in seen["dep"] or seen["dep"]["replicas"] is None  # the HPA owns replicas
    for meta in (seen["hpa_meta"], seen["dep_meta"]):
        annotations = meta["annotations"]
        assert annotations["hpa-consumer.metrics-aggregation.io/metrics-api-service"] == "v1beta1.metrics.k8s.io"
        assert annotations["hpa-consumer.metrics-aggregation.io/metrics-server-namespace"] == "kube-system"
        assert annotations["hpa-consumer.metrics-aggregation.io/metrics-stack"] == "organization/metrics-aggregation/dev"


def test_verifies_the_live_api_service_before_deploying(program):
    mocks, run = program()
    run(lambda result: result["exports"]["hpaName"])
    live = mocks.resources[("kubernetes:apiregistration.k8s.io/v1:APIService", "metrics-api-service")]
    assert live.resource_id == "v1beta1.metrics.k8s.io"  # read by the name the reference exports, not created


def test_depends_on_reference_and_live_api_service(program):
    mocks, run = program()
    captured = {}
    original = pulumi.ResourceOptions.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if kwargs.get("depends_on"):
            captured.setdefault("depends_on", []).append(list(kwargs["depends_on"]))

    pulumi.ResourceOptions.__init__ = spy
    try:
        run(lambda result: result["exports"]["hpaName"])
    finally:
        pulumi.ResourceOptions.__init__ = original
    type_lists = [sorted(type(d).__name__ for d in deps) for deps in captured["depends_on"]]
    assert ["APIService", "StackReference"] in type_lists  # the Deployment
    assert ["APIService", "Deployment", "StackReference"] in type_lists  # the HPA


def test_verification_can_be_switched_off(program):
    mocks, run = program(verifyApiService="false")
    run(lambda result: result["exports"]["hpaName"])
    assert ("kubernetes:apiregistration.k8s.io/v1:APIService", "metrics-api-service") not in mocks.resources
    assert ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "php-apache") in mocks.resources


def test_expect_no_pods_skips_only_the_pod_awaits(program):
    def annotations(mocks, type_):
        return mocks.resources[(type_, "php-apache")].inputs["metadata"].get("annotations") or {}

    mocks, run = program()
    run(lambda result: result["exports"]["hpaName"])
    for type_ in ("kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service"):
        assert "pulumi.com/skipAwait" not in annotations(mocks, type_)

    mocks, run = program(expectNoPods="true")
    run(lambda result: result["exports"]["hpaName"])
    for type_ in ("kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service"):
        assert annotations(mocks, type_)["pulumi.com/skipAwait"] == "true"
    assert "pulumi.com/skipAwait" not in annotations(mocks, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")


def test_missing_metrics_api_service_stops_with_a_clear_message(program):
    outputs = {k: v for k, v in OUTPUTS.items() if k != "metricsApiService"}
    mocks, run = program(outputs)
    with pytest.raises(pulumi.RunError) as err:
        run(lambda result: result["exports"]["hpaName"])
    message = str(err.value)
    assert "stack 'organization/metrics-aggregation/dev' has no output 'metricsApiService'" in message
    assert "Run `pulumi up` on that metrics-aggregation stack first" in message
    assert "hpa-consumer:metricsStack" in message
    registered = {t for t, _ in mocks.resources}
    assert "kubernetes:apps/v1:Deployment" not in registered
    assert "kubernetes:autoscaling/v2:HorizontalPodAutoscaler" not in registered


def test_a_non_metrics_api_service_is_refused(program):
    mocks, run = program(dict(OUTPUTS, metricsApiService="v1beta1.custom.metrics.k8s.io.example"))
    with pytest.raises(pulumi.RunError, match="is not a metrics.k8s.io APIService"):
        run(lambda result: result["exports"]["hpaName"])


def test_secret_outputs_stay_secret(program):
    mocks, run = program(secret_names=["metricsServerNamespace"])
    secrets = {}

    def check(result):
        e = result["exports"]

        async def probe():
            secrets["ns"] = await e["metricsServerNamespace"].is_secret()
            secrets["api"] = await e["metricsApiService"].is_secret()
            secrets["annotations"] = await result["hpa"].metadata.is_secret()

        import asyncio

        return pulumi.Output.from_input(asyncio.ensure_future(probe()))

    run(check)
    assert secrets == {"ns": True, "api": False, "annotations": True}


def test_unavailable_api_service_is_reported(program):
    mocks, run = program(available="False")
    values = {}
    run(lambda r: r["exports"]["metricsApiAvailable"].apply(lambda v: values.update(available=v)))
    assert values["available"] is False


@pytest.mark.parametrize(
    "value, expected",
    [
        ("dev", "organization/metrics-aggregation/dev"),
        ("prod", "organization/metrics-aggregation/prod"),
        ("organization/metrics-aggregation/sandbox", "organization/metrics-aggregation/sandbox"),
    ],
)
def test_stack_reference_name(value, expected):
    assert consumer.stack_reference_name(value) == expected


@pytest.mark.parametrize("value", ["", "metrics-aggregation/dev", "a//b"])
def test_bad_metrics_stack_is_explained(value):
    with pytest.raises(consumer.ConsumerConfigError, match="hpa-consumer:metricsStack"):
        consumer.stack_reference_name(value)


def test_bad_replica_bounds_are_explained(program):
    mocks, run = program(minReplicas=4, maxReplicas=2)
    with pytest.raises(pulumi.RunError, match=r"minReplicas \(4\) must be >= 1 and <= maxReplicas \(2\)"):
        run(lambda result: result["exports"]["hpaName"])


def test_project_files():
    import yaml

    project = yaml.safe_load((EXAMPLE / "Pulumi.yaml").read_text())
    assert project["name"] == "hpa-consumer" and project["runtime"]["name"] == "python"
    assert "metricsStack" in project["config"]
    stack = yaml.safe_load((EXAMPLE / "Pulumi.dev.yaml").read_text())
    assert stack["config"]["hpa-consumer:metricsStack"] == "dev"
    main = (EXAMPLE / "__main__.py").read_text()
    assert "hpa_consumer.main()" in main
    logging.getLogger(__name__).debug("project files ok")


def test_the_consumer_reads_the_contract_s_names():
    """The example is a project of its own (it is copied out and run alone), so it spells the names it reads
    instead of importing them: they are the contract's."""
    assert consumer.METRICS_PROJECT == contract.NAMESPACE
    assert consumer.REQUIRED_OUTPUT == contract.OUTPUT_METRICS_API_SERVICE
    assert consumer.NAMESPACE_OUTPUT == contract.OUTPUT_METRICS_SERVER_NAMESPACE
    assert tuple(OUTPUTS) == contract.OUTPUTS
    assert consumer.VERSION_OUTPUT == contract.OUTPUT_CONTRACT_VERSION
    assert consumer.CONTRACT_MAJOR == int(contract.CONTRACT_VERSION.split(".")[0])
    assert set(consumer.NOT_AFTER_OUTPUTS) == {n for n in contract.OUTPUTS if n.endswith("NotAfter")}


def _exports(run, *names):
    seen = {}

    def check(result):
        e = result["exports"]
        return pulumi.Output.all(*(e[n] for n in names)).apply(lambda v: seen.update(zip(names, v, strict=True)))

    run(check)
    return seen


def _in_days(days: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    return when.astimezone(dt.timezone(dt.timedelta(hours=-5))).strftime("%Y-%m-%dT%H:%M:%S.123456789-05:00")


def test_warns_of_certificates_expiring_within_the_window(program, monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(msg))
    # 9.5 days, not 10: _in_days writes whole seconds + .123456789, which can land a fraction of a second
    # *after* now + 10 days (then "expires in 10 days"): a flake seen in full runs
    outputs = {**OUTPUTS, "proxyClientCertNotAfter": _in_days(9.5), "aggregatorCaNotAfter": _in_days(-1),
               "metricsServerServingCaNotAfter": _in_days(3650), "metricsServerServingCertNotAfter": _in_days(45)}
    _, run = program(outputs, expiryWarningDays=30)
    seen = _exports(run, "expiringSoon", "metricsContractVersion")
    assert seen["expiringSoon"] == ["proxyClientCertNotAfter", "aggregatorCaNotAfter"]
    assert seen["metricsContractVersion"] == "1.1.0"
    assert len(warnings) == 2
    assert "proxy-client certificate expires in 9 days" in warnings[0] and "pulumi up" in warnings[0]
    assert "aggregator CA expired" in warnings[1] and "rotation" in warnings[1]


def test_the_provider_s_local_offset_is_honoured():
    """pulumi-tls writes notAfter in its local zone with nanoseconds: 17:05:17.750041123-04:00 is 21:05:17Z.
    Two hours before 30 days are left, no warning; read as 17:05 UTC it would already warn."""
    times = {"proxyClientCertNotAfter": "2027-11-26T17:05:17.750041123-04:00"}
    before = dt.datetime(2027, 10, 27, 19, 5, 17, tzinfo=dt.UTC)
    assert consumer.expiring(times, before, 30) == ([], [])
    warnings, names = consumer.expiring(times, before + dt.timedelta(hours=2, seconds=1), 30)
    assert names == ["proxyClientCertNotAfter"] and "expires in 29 days" in warnings[0]


def test_null_times_are_not_watched_and_bad_ones_are_said(program, monkeypatch):
    """apiserver.manage: false / metricsServer.manage: false export null times; a bad one is a warning."""
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(msg))
    outputs = {**OUTPUTS, "proxyClientCertNotAfter": None, "aggregatorCaNotAfter": None,
               "metricsServerServingCaNotAfter": "next year", "metricsServerServingCertNotAfter": None}
    _, run = program(outputs)
    assert _exports(run, "expiringSoon") == {"expiringSoon": []}
    assert len(warnings) == 1 and "'next year' is not an RFC 3339 time" in warnings[0]


def test_a_stack_before_contract_versions_is_1_0_0(program):
    old = {k: v for k, v in OUTPUTS.items() if k in OUTPUTS_1_0_0}
    _, run = program(old)
    assert _exports(run, "metricsContractVersion", "expiringSoon") == {
        "metricsContractVersion": "1.0.0", "expiringSoon": []}


def test_another_contract_major_stops_the_consumer(program):
    mocks, run = program({**OUTPUTS, "contractVersion": "2.0.0"})
    with pytest.raises(Exception, match="contractVersion='2.0.0'.*1.x outputs"):
        run(lambda result: result["exports"]["metricsApiService"])
    assert ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "php-apache") not in mocks.resources


def test_expiry_warning_days_must_not_be_negative(program):
    _, run = program(expiryWarningDays=-1)
    with pytest.raises(consumer.ConsumerConfigError, match="hpa-consumer:expiryWarningDays is -1"):
        run(lambda result: None)


# The README's NetworkPolicy example for the metrics-server outputs of contract 1.3.0: run as it is written.
README_SECTION = "## metrics-server's address for firewalls and NetworkPolicies"
METRICS_SERVER_OUTPUTS = (contract.OUTPUT_METRICS_SERVER_IMAGE, contract.OUTPUT_METRICS_SERVER_HOST_NETWORK,
                          contract.OUTPUT_METRICS_SERVER_PORT)


def _readme_example() -> str:
    text = (EXAMPLE / "README.md").read_text()
    section = text.split(README_SECTION, 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def _run_readme_example(program, **outputs):
    mocks, _ = program({**OUTPUTS, **outputs})

    @pulumi.runtime.test
    def body():
        exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "readme_example"})

    try:
        body()
    finally:
        # A stopped example leaves its failed (finished) tasks queued in the runtime, which the next
        # program run of this process would await again and fail on (pulumi.runtime.test clears them only
        # when it starts; tests/support/program.run does not).
        SETTINGS.rpc_manager.clear()
        SETTINGS.outputs.clear()
    return mocks


def test_the_readme_network_policy_example_allows_the_masters_to_the_pods_port(program):
    table = (EXAMPLE / "README.md").read_text().split(README_SECTION, 1)[1].split("```python", 1)[0]
    for name in METRICS_SERVER_OUTPUTS:
        assert f"| `{name}` |" in table, name
        assert f'ref.get_output("{name}")' in _readme_example() or name == contract.OUTPUT_METRICS_SERVER_IMAGE
    mocks = _run_readme_example(program, metricsServerPort=4443)
    policy = mocks.resources[("kubernetes:networking.k8s.io/v1:NetworkPolicy", "apiservers-to-metrics-server")].inputs
    assert policy["metadata"]["namespace"] == "kube-system"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"k8s-app": "metrics-server"}}
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"ipBlock": {"cidr": "10.0.0.101/32"}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 4443}]


@pytest.mark.parametrize("outputs, words", [
    ({"metricsServerHostNetwork": True}, "on the nodes' network: open TCP 10250 in the node firewall"),
    ({"metricsServerHostNetwork": None, "metricsServerPort": None, "metricsServerImage": None},
     "does not run metrics-server"),
], ids=["hostNetwork", "manage false"])
def test_the_readme_network_policy_example_stops_where_a_policy_cannot_help(program, outputs, words):
    with pytest.raises(pulumi.RunError, match=words):
        _run_readme_example(program, **outputs)
