"""Renewal without restarts (issue 13 part 2), under the mocks: pki.renewNow, what a renewed proxy-client
certificate re-runs, and the serving certificate's checksum on metrics-server's pod template.

A renewal is modelled as a second evaluation of the same config: the tls fakes sign a new certificate
(new serial, same cached key) each time, as the provider does when it replaces one. The engine re-runs a
remote Command only when its inputs differ, so equal inputs of every `<master>-flags` step prove that a
renewal restarts no apiserver; tests/e2e/test_renewal.py proves the same with the real engine.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography import x509

from components import metrics_server as ms
from components.config import ConfigError, parse
from tests.support.program import Run, run
from tests.unit.test_urns import snapshot

PROXY_CERT = "tls:index/locallySignedCert:LocallySignedCert::proxy-client"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"


def _triggers(result: Run) -> dict[str, Any]:
    return {f"{r.type}::{r.name}": r.replacement_trigger for r in result.resources if r.replacement_trigger is not None}


def _one(result: Run, type_and_name: str) -> Any:
    (r,) = [r for r in result.resources if f"{r.type}::{r.name}" == type_and_name]
    return r


def _serial(pem: str) -> int:
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """The paths where two plain values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


# --- pki.renewNow -------------------------------------------------------------------------------------------


def test_without_renew_now_no_resource_carries_a_replacement_trigger(stack_config):
    # the engine stores a trigger in state: a stack that never sets renewNow must not gain one
    result = run(stack_config())
    assert result.settings.pki.renew_now is None
    assert _triggers(result) == {}


@pytest.mark.parametrize("value", ["2026-12-02", 7, "7", "renew again"])
def test_renew_now_is_a_trigger_on_the_proxy_client_certificate_only(stack_config, value):
    plain = run(stack_config())
    renewed = run(stack_config(pki={"renewNow": value}))
    assert renewed.settings.pki.renew_now == str(value)  # 7 and "7" are one value
    # not on its key or CSR: the new certificate keeps the key (no half-new pair on the masters), and not
    # on any other certificate (the CAs, metrics-server's serving pair)
    assert _triggers(renewed) == {PROXY_CERT: str(value)}
    # the trigger is a resource option: URNs, dependencies and every tls input stay as they are
    assert snapshot(renewed) == snapshot(plain)


@pytest.mark.parametrize("value", [True, 1.5, "", "   ", [1], {"at": "2026-12-02"}])
def test_renew_now_must_be_text_or_a_whole_number(stack_config, value):
    with pytest.raises(ConfigError) as err:
        parse(stack_config(pki={"renewNow": value}))
    (line,) = err.value.problems
    assert line.startswith("metrics-aggregation:pki.renewNow: ")
    assert "change it to renew the proxy-client certificate" in line


# --- a renewed proxy-client certificate: certs steps only ---------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_a_renewed_proxy_cert_reruns_only_the_certs_steps(stack_config, n):
    before = run(stack_config(n_masters=n, pki={"renewNow": "1"}))
    after = run(stack_config(n_masters=n, pki={"renewNow": "2"}))
    old_pem, new_pem = (_one(r, PROXY_CERT).state["certPem"] for r in (before, after))
    assert _serial(old_pem) != _serial(new_pem), "the fakes did not sign a new certificate"
    key = "tls:index/privateKey:PrivateKey::proxy-client-key"
    assert _one(before, key).state["privateKeyPem"] == _one(after, key).state["privateKeyPem"]
    for m in before.settings.masters:
        certs_a, certs_b = before.named(f"{m.name}-certs"), after.named(f"{m.name}-certs")
        # the new certificate reaches the master through the certs step's stdin, and only through it
        assert _differences(certs_a.inputs, certs_b.inputs) == ["stdin"], m.name
        assert new_pem in certs_b.inputs["stdin"] and old_pem not in certs_b.inputs["stdin"]
        # the flags step (the one that restarts kube-apiserver) has the same inputs: the engine leaves it alone
        flags_a, flags_b = before.named(f"{m.name}-flags"), after.named(f"{m.name}-flags")
        assert _differences(flags_a.inputs, flags_b.inputs) == [], m.name
        assert "CERTIFICATE" not in repr(flags_b.inputs)
        # it runs after the certs step by depends_on, which re-runs nothing on its own
        assert certs_b.urn in flags_b.dependencies


# --- metrics-server's serving certificate: a checksum on the pod template ------------------------------------


def _serving_cert_pem(result: Run) -> str:
    (secret,) = result.of_type(SECRET)
    return base64.b64decode(secret.inputs["data"]["tls.crt"]).decode()


def test_a_new_serving_cert_changes_only_the_pod_templates_checksum(stack_config):
    a, b = run(stack_config()), run(stack_config())
    pem_a, pem_b = _serving_cert_pem(a), _serving_cert_pem(b)
    assert _serial(pem_a) != _serial(pem_b), "the fakes did not sign a new serving certificate"
    (dep_a,), (dep_b,) = a.of_type(DEPLOYMENT), b.of_type(DEPLOYMENT)
    annotations = "spec.template.metadata.annotations"
    assert dep_a.inputs["spec"]["template"]["metadata"]["annotations"]["checksum/serving-cert"] == ms.sha256(pem_a)
    assert dep_b.inputs["spec"]["template"]["metadata"]["annotations"]["checksum/serving-cert"] == ms.sha256(pem_b)
    # a changed pod template is a rollout; nothing else of the Deployment changes
    assert _differences(dep_a.inputs, dep_b.inputs) == [f"{annotations}.checksum/serving-cert"]

