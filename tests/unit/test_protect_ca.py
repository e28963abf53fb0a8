"""pki.protectCa (issue 13 part 5): the aggregator CA's key and certificate carry Pulumi's `protect` by
default, and only they; protectCa: false lifts it. `protect` is a resource option, so the URNs and the
tls inputs stay what tests/unit/test_urns.py pins (it runs the example stacks, which keep the default)."""

from __future__ import annotations

import pytest

from components.config import parse
from tests.support.program import run
from tests.unit.test_existing_ca import make_ca
from tests.unit.test_urns import snapshot

CA_KEY = "tls:index/privateKey:PrivateKey"
CA_CERT = "tls:index/selfSignedCert:SelfSignedCert"
CA_PARENT = "metrics-aggregation:pki:AggregatorCA"


def _protected(result) -> set[str]:
    return {f"{r.type}::{r.name}" for r in result.resources if r.protect}


def test_the_default_protects_exactly_the_aggregator_ca_key_and_cert(stack_config):
    result = run(stack_config())
    assert result.settings.pki.protect_ca is True
    assert _protected(result) == {f"{CA_KEY}::aggregator-ca-key", f"{CA_CERT}::aggregator-ca"}
    for r in result.resources:
        if r.protect:
            assert r.urn.startswith(f"urn:pulumi:test::metrics-aggregation::{CA_PARENT}$"), r.urn


def test_protect_ca_false_protects_nothing_and_changes_no_urn_or_input(stack_config):
    protected = run(stack_config())
    plain = run(stack_config(pki={"protectCa": False}))
    assert plain.settings.pki.protect_ca is False
    assert _protected(plain) == set()
    # what a preview compares is the same either way: protect is no input and no part of a URN
    assert snapshot(plain) == snapshot(protected)


def test_existing_ca_has_no_ca_resource_to_protect(stack_config):
    result = run(stack_config(pki={"existingCa": make_ca(cn="front-proxy-ca").config()}))
    assert _protected(result) == set()
    assert [r.name for r in result.of_type(CA_CERT)] == ["metrics-server-serving-ca"]  # not the aggregator's


@pytest.mark.parametrize("value", ["maybe", 2, None, {"enabled": True}])
def test_protect_ca_must_be_a_boolean(stack_config, value):
    # like every boolean key: true/false, and what `pulumi config set` may store for them ("false", 0)
    with pytest.raises(Exception) as err:
        parse(stack_config(pki={"protectCa": value}))
    assert "pki.protectCa" in str(err.value)
