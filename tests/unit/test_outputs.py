"""The outputs contract of docs/contracts.md: other projects read these names with StackReference."""

from __future__ import annotations

import datetime as dt

from tests.support.program import run

CONTRACT = {
    "aggregatorCaCertPem", "proxyClientCertPem", "proxyClientCertNotAfter", "requestheaderAllowedNames",
    "apiserverFlags", "masters", "metricsApiService", "metricsServerNamespace",
}


def test_output_names_are_exactly_the_contract(stack_config):
    assert set(run(stack_config()).outputs) == CONTRACT


def test_output_values(stack_config):
    cfg = stack_config(n_masters=2, pki={"proxyClientCommonName": "front-proxy-client"},
                       apiserver={"certDir": "/etc/kubernetes/pki/agg"})
    out = run(cfg).outputs
    assert out["aggregatorCaCertPem"].startswith("-----BEGIN CERTIFICATE-----")
    assert out["proxyClientCertPem"].startswith("-----BEGIN CERTIFICATE-----")
    assert dt.datetime.fromisoformat(out["proxyClientCertNotAfter"].replace("Z", "+00:00")).tzinfo
    assert out["requestheaderAllowedNames"] == ["front-proxy-client"]
    assert out["masters"] == [{"name": "master1", "address": "198.18.0.10"},
                              {"name": "master2", "address": "198.18.0.11"}]
    assert out["metricsApiService"] == "v1beta1.metrics.k8s.io"
    assert out["metricsServerNamespace"] == "kube-system"
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
