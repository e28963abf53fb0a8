"""pki.caGeneration / pki.caRotation (issue 13 part 3): the config rules, and the graph of every stage —
which CAs exist and are protected, which signs the proxy cert, what the masters trust, which steps re-run
(only the certs steps), and the gate/prune step (components/ca_rotation.py; its tool: test_ca_retirement)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from components import ca_rotation, contract
from components.config import ConfigError, parse
from tests.support.program import run
from tests.unit.test_existing_ca import make_ca
from tests.unit.test_urns import snapshot

CA_CERT = "tls:index/selfSignedCert:SelfSignedCert"
LOCAL = "command:local:Command"
REMOTE = "command:remote:Command"
KUBE = {"kubeconfig": "/nonexistent/kubeconfig", "context": None, "cluster": None}


@pytest.fixture(autouse=True)
def _no_cluster_read(monkeypatch):
    """The program reads the kubernetes:* stack config for the retirement step: none in the unit tier."""
    from components import kube_access

    monkeypatch.setattr(kube_access, "read_settings", lambda *a, **k: kube_access.KubeSettings(KUBE))


def stage(stack_config, generation: int | None = None, rotation: str | None = None, **pki):
    keys = dict(pki)
    if generation is not None:
        keys["caGeneration"] = generation
    if rotation is not None:
        keys["caRotation"] = rotation
    return stack_config(pki={"hosts": ["127.0.0.1", "kubernetes", "kubernetes.default"], **keys})


def trusted(result) -> list[str]:
    """The CNs of the CAs in the aggregatorCaCertPem output, in order."""
    return [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            for c in x509.load_pem_x509_certificates(result.outputs[contract.OUTPUT_AGGREGATOR_CA_CERT_PEM].encode())]


def issuer_cn(result) -> str:
    proxy = x509.load_pem_x509_certificate(result.outputs[contract.OUTPUT_PROXY_CLIENT_CERT_PEM].encode())
    return proxy.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def cas(result) -> dict[str, bool]:
    """The aggregator CA certificates in the program: name -> protected."""
    return {r.name: r.protect for r in result.of_type(CA_CERT) if r.name.startswith("aggregator-ca")}


# --- config ----------------------------------------------------------------------------------------


def test_defaults_are_generation_one_without_rotation(stack_config):
    s = parse(stack_config())
    assert s.pki.ca_generation == 1 and s.pki.ca_rotation is None


@pytest.mark.parametrize("rotation", ["trust", "sign"])
def test_a_stage_needs_a_generation_above_one(stack_config, rotation):
    with pytest.raises(ConfigError) as err:
        parse(stage(stack_config, rotation=rotation))
    text = str(err.value)
    assert "pki.caRotation" in text and "pki.caGeneration" in text and "trust" in text


@pytest.mark.parametrize("value", ["done", "drop", 2, True])
def test_an_unknown_stage_is_refused(stack_config, value):
    with pytest.raises(ConfigError) as err:
        parse(stack_config(pki={"caGeneration": 2, "caRotation": value}))
    assert "pki.caRotation" in str(err.value)


@pytest.mark.parametrize("value", [0, -1, "two"])
def test_generation_is_an_integer_of_at_least_one(stack_config, value):
    with pytest.raises(ConfigError) as err:
        parse(stack_config(pki={"caGeneration": value}))
    assert "pki.caGeneration" in str(err.value)


@pytest.mark.parametrize("keys", [{"caGeneration": 2}, {"caGeneration": 2, "caRotation": "trust"}])
def test_rotation_with_an_existing_ca_is_refused_with_the_documented_way(stack_config, keys):
    with pytest.raises(ConfigError) as err:
        parse(stack_config(pki={"existingCa": make_ca(cn="front-proxy-ca").config(), **keys}))
    text = str(err.value)
    assert "pki.existingCa" in text and "docs/ca-rotation.md" in text
    assert "PRIVATE KEY" not in text


def test_rotation_with_unmanaged_apiservers_is_refused(stack_config):
    with pytest.raises(ConfigError) as err:
        parse(stack_config(apiserver={"manage": False}, pki={"caGeneration": 2, "caRotation": "trust"}))
    assert "pki.caGeneration" in str(err.value) and "apiserver.manage" in str(err.value)


# --- the graph per stage ---------------------------------------------------------------------------


def test_generation_one_written_explicitly_is_today_s_stack(stack_config):
    assert snapshot(run(stage(stack_config, 1))) == snapshot(run(stack_config()))


def test_stage_trust_adds_the_new_ca_and_bundles_it_on_every_master(stack_config):
    before = run(stack_config())
    result = run(stage(stack_config, 2, "trust"))
    assert cas(result) == {"aggregator-ca": True, "aggregator-ca-gen2": True}
    assert trusted(result) == ["aggregator-ca", "aggregator-ca-gen2"]  # the output: what the masters trust
    assert issuer_cn(result) == "aggregator-ca"  # the proxy cert is still the old CA's
    assert result.outputs[contract.OUTPUT_AGGREGATOR_CA_NOT_AFTER] == next(
        r.state["validityEndTime"] for r in result.of_type(CA_CERT) if r.name == "aggregator-ca-gen2")
    assert result.of_type(LOCAL) == []
    # only the certs steps change: the bundle on stdin and --ca-certs 2; no flags step re-runs (no restart)
    old = {c["name"]: c for c in before.commands}
    for c in result.commands:
        if c["name"].endswith("-flags"):
            assert c["create"] == old[c["name"]]["create"]
        else:
            assert "--ca-certs 2" in c["create"] and "--ca-certs" not in old[c["name"]]["create"]
            assert c["stdin"].count("BEGIN CERTIFICATE") == 3


def test_the_old_ca_keeps_its_urns_through_the_rotation(stack_config):
    before = {r.urn for r in run(stack_config()).resources if r.name.startswith("aggregator-ca")}
    for s in ("trust", "sign"):
        during = {r.urn for r in run(stage(stack_config, 2, s)).resources if r.name.startswith("aggregator-ca")}
        assert before <= during


def test_stage_sign_re_signs_the_proxy_cert_after_the_gate_and_unprotects_the_old_ca(stack_config):
    result = run(stage(stack_config, 2, "sign"))
    assert cas(result) == {"aggregator-ca": False, "aggregator-ca-gen2": True}
    assert trusted(result) == ["aggregator-ca", "aggregator-ca-gen2"]
    assert issuer_cn(result) == "aggregator-ca-gen2"
    [gate] = result.of_type(LOCAL)
    assert gate.name == "aggregator-ca-retirement-step"
    assert gate.inputs["create"].endswith("-m components.ca_retirement gate")
    assert "stdin" in gate.secret_inputs  # the kubeconfig travels there
    # the re-signed cert (and so every master) waits for the gate
    [signed] = [r for r in result.of_type("tls:index/locallySignedCert:LocallySignedCert")
                if r.name == contract.PROXY_CLIENT_CERT_NAME]
    assert gate.urn in result.waits_for(signed)
    for c in result.commands:
        assert gate.urn in result.waits_for(result.named(c["name"]))


def test_stage_done_drops_the_old_ca_and_prunes_after_every_master(stack_config):
    result = run(stage(stack_config, 2))
    assert cas(result) == {"aggregator-ca-gen2": True}
    assert trusted(result) == ["aggregator-ca-gen2"]
    assert issuer_cn(result) == "aggregator-ca-gen2"
    [prune] = result.of_type(LOCAL)
    assert prune.name == "aggregator-ca-retirement-step"  # the gate's step, updated: it keeps the old CA's PEM
    assert prune.inputs["update"].endswith("-m components.ca_retirement prune")
    waits = result.waits_for(prune)
    assert all(result.named(c["name"]).urn in waits for c in result.commands)
    assert all("--ca-certs" not in c["create"] for c in result.commands)
    assert all(c["stdin"].count("BEGIN CERTIFICATE") == 2 for c in result.commands if c["name"].endswith("-certs"))


def test_the_next_rotation_names_the_generations(stack_config):
    result = run(stage(stack_config, 3, "sign"))
    assert cas(result) == {"aggregator-ca-gen2": False, "aggregator-ca-gen3": True}
    assert [r.name for r in result.of_type(LOCAL)] == ["aggregator-ca-gen2-retirement-step"]
    assert trusted(result) == ["aggregator-ca-gen2", "aggregator-ca-gen3"]


def test_protect_ca_false_protects_no_generation(stack_config):
    result = run(stage(stack_config, 2, "trust", protectCa=False))
    assert cas(result) == {"aggregator-ca": False, "aggregator-ca-gen2": False}


def test_stage_plan():
    S, R = ca_rotation.Stage, ca_rotation.CaRotation
    assert (S(1, None).generations, S(1, None).signer, S(1, None).retirement) == ((1,), 1, None)
    assert (S(2, R.TRUST).generations, S(2, R.TRUST).signer, S(2, R.TRUST).retirement) == ((1, 2), 1, None)
    assert (S(2, R.SIGN).signer, S(2, R.SIGN).retirement, S(2, R.SIGN).protected(1)) == (2, "gate", False)
    assert (S(2, None).generations, S(2, None).retirement, S(2, None).protected(2)) == ((2,), "prune", True)
