"""The outputs contract of docs/contracts.md: other projects read these names with StackReference."""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from components import contract
from components.rfc3339 import parse_time
from tests.support.mocks import cert_second
from tests.support.program import run
from tests.unit.test_existing_ca import make_ca

CONTRACT = {
    "aggregatorCaCertPem", "proxyClientCertPem", "proxyClientCertNotAfter", "requestheaderAllowedNames",
    "apiserverFlags", "masters", "metricsApiService", "metricsServerNamespace",
    # contract 1.1.0 (1.2.0 added no name)
    "aggregatorCaNotAfter", "metricsServerServingCaCertPem", "metricsServerServingCaNotAfter",
    "metricsServerServingCertNotAfter", "contractVersion",
    # contract 1.3.0
    "metricsServerImage", "metricsServerHostNetwork", "metricsServerPort",
}
UNMANAGED = {"manage": False, "layout": "static-pod", "enableAggregatorRouting": False}
STACKS = {  # every shape of stack: the outputs are the same names in each
    "managed": {},
    "apiserver.manage: false": {"apiserver": UNMANAGED},
    "metricsServer.manage: false": {"metricsServer": {"manage": False, "namespace": "monitoring"}},
    "both unmanaged": {"apiserver": UNMANAGED, "metricsServer": {"manage": False}},
}


def test_output_names_are_exactly_the_contract(stack_config):
    assert set(run(stack_config()).outputs) == CONTRACT


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_exports_exactly_contract_outputs(stack_config, stack):
    assert sorted(run(stack_config(**STACKS[stack])).outputs) == sorted(contract.OUTPUTS)


def test_the_contract_version_is_semver_and_exported(stack_config):
    assert re.fullmatch(r"\d+\.\d+\.\d+", contract.CONTRACT_VERSION)
    assert run(stack_config()).outputs["contractVersion"] == contract.CONTRACT_VERSION


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_every_not_after_is_its_certificate_s(stack_config):
    """The *NotAfter outputs are pulumi-tls's validity_end_time as the released provider writes it (the mocks:
    nanoseconds in the provider's local zone, -04:00), published as it comes: RFC 3339, the contract; cut to
    whole seconds it is the certificate's notAfter."""
    out = run(stack_config()).outputs
    ca, proxy = _cert(out["aggregatorCaCertPem"]), _cert(out["proxyClientCertPem"])
    serving_ca = _cert(out["metricsServerServingCaCertPem"])
    assert re.fullmatch(r"[-0-9]{10}T[:0-9]{8}\.750041123-04:00", out["proxyClientCertNotAfter"])
    assert cert_second(out["aggregatorCaNotAfter"]) == ca.not_valid_after_utc
    assert cert_second(out["proxyClientCertNotAfter"]) == proxy.not_valid_after_utc
    assert cert_second(out["metricsServerServingCaNotAfter"]) == serving_ca.not_valid_after_utc
    # the serving CA is metrics-server's own, not the aggregator CA, and is a CA
    assert serving_ca.subject != ca.subject
    assert serving_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_serving_cert_not_after_is_the_secret_s_cert(stack_config):
    """The serving leaf is not an output (only its CA and expiry are): its notAfter is the one in the Secret
    metrics-server serves with, and the serving CA output signed that certificate."""
    result = run(stack_config())
    [leaf_cert] = [r for r in result.resources if r.type == "tls:index/locallySignedCert:LocallySignedCert"
                   and r.name.endswith("-serving-cert")]
    leaf = _cert(leaf_cert.state["certPem"])
    serving_ca = _cert(result.outputs["metricsServerServingCaCertPem"])
    assert cert_second(result.outputs["metricsServerServingCertNotAfter"]) == leaf.not_valid_after_utc
    leaf.verify_directly_issued_by(serving_ca)
    assert isinstance(serving_ca.public_key(), ec.EllipticCurvePublicKey)


def test_unmanaged_outputs_are_null(stack_config):
    out = run(stack_config(**STACKS["both unmanaged"])).outputs
    nulls = ["aggregatorCaCertPem", "aggregatorCaNotAfter", "proxyClientCertPem", "proxyClientCertNotAfter",
             "metricsServerServingCaCertPem", "metricsServerServingCaNotAfter", "metricsServerServingCertNotAfter",
             "metricsServerImage", "metricsServerHostNetwork", "metricsServerPort"]
    assert {k: out[k] for k in nulls} == dict.fromkeys(nulls)
    assert out["contractVersion"] == contract.CONTRACT_VERSION
    out = run(stack_config(**STACKS["metricsServer.manage: false"])).outputs
    assert parse_time(out["aggregatorCaNotAfter"]) and out["metricsServerServingCaCertPem"] is None
    assert [out[k] for k in ("metricsServerImage", "metricsServerHostNetwork", "metricsServerPort")] == [None] * 3


def test_the_existing_ca_s_not_after_is_the_output(stack_config):
    ca = make_ca(cn="front-proxy-ca")
    cfg = stack_config(apiserver=UNMANAGED)
    cfg["pki"]["existingCa"] = ca.config()
    out = run(cfg).outputs
    given = x509.load_pem_x509_certificate(ca.cert_pem.encode()).not_valid_after_utc
    assert parse_time(out["aggregatorCaNotAfter"]) == given


def test_no_output_is_a_private_key(stack_config):
    for stack in STACKS.values():
        assert "PRIVATE KEY" not in repr(run(stack_config(**stack)).outputs)


def test_output_values(stack_config):
    cfg = stack_config(n_masters=2, pki={"proxyClientCommonName": "front-proxy-client"},
                       apiserver={"certDir": "/etc/kubernetes/pki/agg"})
    out = run(cfg).outputs
    assert out["aggregatorCaCertPem"].startswith("-----BEGIN CERTIFICATE-----")
    assert out["proxyClientCertPem"].startswith("-----BEGIN CERTIFICATE-----")
    assert parse_time(out["proxyClientCertNotAfter"]).tzinfo
    assert out["requestheaderAllowedNames"] == ["front-proxy-client"]
    assert out["masters"] == [{"name": "master1", "address": "198.18.0.10"},
                              {"name": "master2", "address": "198.18.0.11"}]
    assert out["metricsApiService"] == "v1beta1.metrics.k8s.io"
    assert out["metricsServerNamespace"] == "kube-system"
    assert out["metricsServerImage"] == "registry.k8s.io/metrics-server/metrics-server:v0.8.1"
    assert out["metricsServerHostNetwork"] is False
    assert out["metricsServerPort"] == 10250
    assert out["apiserverFlags"] == {
        "--requestheader-client-ca-file": "/etc/kubernetes/pki/agg/aggregator-ca.pem",
        "--requestheader-allowed-names": "front-proxy-client",
        "--requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "--requestheader-group-headers": "X-Remote-Group",
        "--requestheader-username-headers": "X-Remote-User",
        "--proxy-client-cert-file": "/etc/kubernetes/pki/agg/aggregator.pem",
        "--proxy-client-key-file": "/etc/kubernetes/pki/agg/aggregator-key.pem",
        "--enable-aggregator-routing": "true",
    }


def test_aggregator_routing_can_be_left_off(stack_config):
    out = run(stack_config(apiserver={"enableAggregatorRouting": False})).outputs
    assert "--enable-aggregator-routing" not in out["apiserverFlags"]


def test_flags_on_the_host_match_the_output(stack_config):
    result = run(stack_config())
    for c in result.commands:
        if c["name"].endswith("-flags"):
            for flag, value in result.outputs["apiserverFlags"].items():
                assert f"--flag {flag}={value}" in c["create"]


def test_metrics_server_outputs_are_how_the_deployment_runs(stack_config):
    digest = "sha256:" + "5f" * 32
    result = run(stack_config(metricsServer={"hostNetwork": True, "containerPort": 4443, "imageDigest": digest,
                                             "image": "mirror.example/metrics-server", "version": "v0.8.0"}))
    out = result.outputs
    assert out["metricsServerImage"] == f"mirror.example/metrics-server:v0.8.0@{digest}"
    assert out["metricsServerHostNetwork"] is True and out["metricsServerPort"] == 4443
    [dep] = [r for r in result.resources if r.type == "kubernetes:apps/v1:Deployment"]
    spec = dep.inputs["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == out["metricsServerImage"]
    assert spec["hostNetwork"] is True and spec["containers"][0]["ports"][0]["containerPort"] == 4443
