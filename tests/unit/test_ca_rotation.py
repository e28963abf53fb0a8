"""pki.caGeneration / pki.caRotation (issue 13 part 3): the config rules, and the graph of every stage —
which CAs exist and are protected, which signs the proxy cert, what the masters trust, which steps re-run
(only the certs steps), and when the gate and the prune run (components/ca_rotation.py; the checks
themselves: test_ca_retirement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from components import ca_rotation, contract
from components.apiserver import host_files_text
from components.config import ConfigError, parse
from tests.support.program import run
from tests.unit.test_existing_ca import make_ca
from tests.unit.test_urns import snapshot

CA_CERT = "tls:index/selfSignedCert:SelfSignedCert"
RETIREMENT = ca_rotation.RETIREMENT_TYPE
KUBE = {"kubeconfig": "/nonexistent/kubeconfig", "context": None, "cluster": None}
GONE = "ab" * 32  # the sha256 of a CA that a master's certs step says it no longer trusts


@pytest.fixture(autouse=True)
def checks(monkeypatch):
    """The gate and the prune read the cluster: recorded here instead (what they do: test_ca_retirement)."""
    from components import ca_retirement, kube_access

    calls: list[tuple] = []
    monkeypatch.setattr(kube_access, "read_settings", lambda *a, **k: kube_access.KubeSettings(KUBE))
    monkeypatch.setattr(ca_retirement, "cluster_of", lambda kube: ("cluster", kube["kubeconfig"]))
    monkeypatch.setattr(ca_retirement, "gate", lambda cluster, new: calls.append(("gate", cluster, new)))
    monkeypatch.setattr(ca_retirement, "prune",
                        lambda cluster, new, gone, names: calls.append(("prune", cluster, new, gone, names)) or gone)
    return calls


@pytest.fixture
def certs_say_gone(monkeypatch):
    """Every certs step prints what install-certs prints when the CA file loses a CA."""
    from tests.support.mocks import Mocks

    new_resource = Mocks.new_resource

    def with_stdout(self, args):
        rid, state = new_resource(self, args)
        if args.typ == "command:remote:Command" and args.name.endswith("-certs"):
            state = {**state, "stdout": f"apiserver-aggregation: {args.name}: /etc/kubernetes/ssl/aggregator-ca.pem "
                                        f"no longer trusts the CA sha256:{GONE}\n"}
        return rid, state

    monkeypatch.setattr(Mocks, "new_resource", with_stdout)


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


def pems(certs_step: dict) -> str:
    """What install-certs reads: the certs step's stdin after the host script and its editor."""
    return certs_step["stdin"][len(host_files_text()):]


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


def test_stage_trust_adds_the_new_ca_and_bundles_it_on_every_master(stack_config, checks):
    before = run(stack_config())
    result = run(stage(stack_config, 2, "trust"))
    assert cas(result) == {"aggregator-ca": True, "aggregator-ca-gen2": True}
    assert trusted(result) == ["aggregator-ca", "aggregator-ca-gen2"]  # the output: what the masters trust
    assert issuer_cn(result) == "aggregator-ca"  # the proxy cert is still the old CA's
    assert result.outputs[contract.OUTPUT_AGGREGATOR_CA_NOT_AFTER] == next(
        r.state["validityEndTime"] for r in result.of_type(CA_CERT) if r.name == "aggregator-ca-gen2")
    assert result.of_type(RETIREMENT) == [] and checks == []  # nothing is signed by the new CA yet
    # only the certs steps change: the bundle on stdin and --ca-certs 2; no flags step re-runs (no restart)
    old = {c["name"]: c for c in before.commands}
    for c in result.commands:
        if c["name"].endswith("-flags"):
            assert c["create"] == old[c["name"]]["create"]
        else:
            assert "--ca-certs 2" in c["create"] and "--ca-certs" not in old[c["name"]]["create"]
            assert pems(c).count("BEGIN CERTIFICATE") == 3


def test_the_old_ca_keeps_its_urns_through_the_rotation(stack_config):
    before = {r.urn for r in run(stack_config()).resources if r.name.startswith("aggregator-ca")}
    for s in ("trust", "sign"):
        during = {r.urn for r in run(stage(stack_config, 2, s)).resources if r.name.startswith("aggregator-ca")}
        assert before <= during


def test_stage_sign_re_signs_the_proxy_cert_after_the_gate_and_unprotects_the_old_ca(stack_config, checks):
    result = run(stage(stack_config, 2, "sign"))
    assert cas(result) == {"aggregator-ca": False, "aggregator-ca-gen2": True}
    assert trusted(result) == ["aggregator-ca", "aggregator-ca-gen2"]
    assert issuer_cn(result) == "aggregator-ca-gen2"
    [retirement] = result.of_type(RETIREMENT)
    assert retirement.name == "aggregator-ca-gen2-retirement"
    # the gate ran with the stack's kubeconfig, for the new CA, and nothing was pruned
    [(kind, cluster, new)] = checks
    assert kind == "gate" and cluster == ("cluster", KUBE["kubeconfig"])
    assert new.subject.rfc4514_string() == "CN=aggregator-ca-gen2"


REFUSING_RUN = """
import json, sys
from components import ca_retirement, kube_access
from tests.support.program import run

def refuse(cluster, new):
    raise ca_retirement.RotationError("metrics-aggregation:pki.caRotation: refused, wait 30 s")

kube_access.read_settings = lambda *a, **k: kube_access.KubeSettings({"kubeconfig": "/nonexistent"})
ca_retirement.cluster_of = lambda kube: None
ca_retirement.gate = refuse
try:
    run(json.loads(sys.stdin.read()))
except Exception as exc:
    print(json.dumps({"error": str(exc), "types": sorted({r.type for r in exc.registrations})}))
"""


def test_the_proxy_cert_waits_for_the_gate(stack_config):
    """A refusing gate: the proxy cert is never signed, so no certs step (no master) is registered. (In a
    process of its own: a failed run leaves registrations pending in the event loop.)"""
    p = subprocess.run([sys.executable, "-c", REFUSING_RUN], input=json.dumps(stage(stack_config, 2, "sign")),
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert "CA rotation: metrics-aggregation:pki.caRotation: refused, wait 30 s" in out["error"]
    assert "tls:index/locallySignedCert:LocallySignedCert" not in out["types"]
    assert "command:remote:Command" not in out["types"]
    assert "tls:index/selfSignedCert:SelfSignedCert" in out["types"]  # the CAs were registered (no change)


NO_KUBECONFIG_RUN = """
import json, sys
from components import kube_access
from tests.support.program import run

kube_access.read_settings = lambda *a, **k: kube_access.KubeSettings({})
try:
    run(json.loads(sys.stdin.read()))
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_without_a_kubeconfig_the_gate_names_the_key_and_why(stack_config, tmp_path):
    """At generation 2 or more every `up` reads the cluster, even a stack that manages no metrics-server:
    the error says so and names kubernetes:kubeconfig."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "absent")}
    p = subprocess.run([sys.executable, "-c", NO_KUBECONFIG_RUN], input=json.dumps(stage(stack_config, 2)),
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2], env=env)
    error = json.loads(p.stdout.strip().splitlines()[-1])["error"]
    assert "CA rotation: no kubeconfig: set kubernetes:kubeconfig" in error
    assert "pki.caGeneration 2 or more" in error and "metricsServer.manage: false" in error


@pytest.mark.parametrize("rotation", ["sign", None])
def test_a_preview_reads_no_cluster(stack_config, checks, certs_say_gone, rotation):
    run(stage(stack_config, 2, rotation), preview=True)
    assert checks == []


def test_stage_done_drops_the_old_ca_and_prunes_what_the_masters_stopped_trusting(stack_config, checks,
                                                                                 certs_say_gone):
    result = run(stage(stack_config, 2))
    assert cas(result) == {"aggregator-ca-gen2": True}
    assert trusted(result) == ["aggregator-ca-gen2"]
    assert issuer_cn(result) == "aggregator-ca-gen2"
    [retirement] = result.of_type(RETIREMENT)
    assert retirement.name == "aggregator-ca-gen2-retirement"
    # the gate (a skipped stage sign re-signs here), then the prune of exactly what the certs steps named
    assert [c[0] for c in checks] == ["gate", "prune"]
    assert checks[1][3] == [GONE]
    # only a CA of the program's own generations may go (the backed-out next one too), never a hand-made one
    assert checks[1][4] == {"aggregator-ca", "aggregator-ca-gen2", "aggregator-ca-gen3"}
    assert all("--ca-certs" not in c["create"] for c in result.commands)
    assert all(pems(c).count("BEGIN CERTIFICATE") == 2 for c in result.commands if c["name"].endswith("-certs"))


def test_the_next_rotation_names_the_generations(stack_config):
    result = run(stage(stack_config, 3, "sign"))
    assert cas(result) == {"aggregator-ca-gen2": False, "aggregator-ca-gen3": True}
    assert [r.name for r in result.of_type(RETIREMENT)] == ["aggregator-ca-gen3-retirement"]
    assert trusted(result) == ["aggregator-ca-gen2", "aggregator-ca-gen3"]


def test_protect_ca_false_protects_no_generation(stack_config):
    result = run(stage(stack_config, 2, "trust", protectCa=False))
    assert cas(result) == {"aggregator-ca": False, "aggregator-ca-gen2": False}


def test_stage_plan():
    S, R = ca_rotation.Stage, ca_rotation.CaRotation
    assert (S(1, None).generations, S(1, None).signer, S(1, None).gated, S(1, None).prunes) == ((1,), 1, False, False)
    assert (S(2, R.TRUST).generations, S(2, R.TRUST).signer, S(2, R.TRUST).gated) == ((1, 2), 1, False)
    assert (S(2, R.SIGN).signer, S(2, R.SIGN).gated, S(2, R.SIGN).prunes, S(2, R.SIGN).protected(1)) == (2, True, False, False)
    assert (S(2, None).generations, S(2, None).gated, S(2, None).prunes, S(2, None).protected(2)) == ((2,), True, True, True)


def test_untrusted_reads_install_certs_lines():
    line = f"apiserver-aggregation: m1: /etc/kubernetes/ssl/aggregator-ca.pem no longer trusts the CA sha256:{GONE}\n"
    assert ca_rotation.untrusted([line, "written\n" + line, None]) == [GONE]
    assert ca_rotation.untrusted(["aggregator-ca.pem written (0644 0:0)"]) == []
