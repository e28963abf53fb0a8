"""Host tier: a CA rotation's stages on a master (pki.caGeneration / pki.caRotation). The program's own
certs steps run over SSH: the masters trust the bundle old + new (install-certs --ca-certs 2), then the new
CA alone; the proxy cert moves to the new CA; no stage restarts the apiserver; destroy still restores."""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from components import ca_retirement, ca_rotation
from components.apiserver import host_files_text
from tests.hosts.test_rollout import assert_certs

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(300)]

CA = "/etc/kubernetes/ssl/aggregator-ca.pem"


def cns(pem: bytes) -> list[str]:
    return [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in x509.load_pem_x509_certificates(pem)]


def sums(h) -> set[str]:
    return {ca_retirement.sha256(c) for c in x509.load_pem_x509_certificates(h.path(CA).read_bytes())}


def issuer(h) -> str:
    cert = x509.load_pem_x509_certificate(h.path("/etc/kubernetes/ssl/aggregator.pem").read_bytes())
    return cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_every_stage_writes_what_the_master_trusts_without_a_restart(lab, make_stack, monkeypatch):
    from components import kube_access

    # stages sign and done check the cluster (the e2e tier does); here the certs steps' output is kept
    monkeypatch.setattr(kube_access, "read_settings", lambda *a, **k: kube_access.KubeSettings({}))
    monkeypatch.setattr(ca_retirement, "cluster_of", lambda kube: None)
    monkeypatch.setattr(ca_retirement, "gate", lambda cluster, new: None)
    monkeypatch.setattr(ca_retirement, "prune", lambda cluster, new, gone, names: gone)
    h = lab.add_host("m1", "env-file")
    original = h.config_bytes()
    first = make_stack([h])
    assert first.up().ok
    restarts = h.restarts()
    key = h.path("/etc/kubernetes/ssl/aggregator-key.pem").read_bytes()

    for keys, trusted, signer in [
        ({"caGeneration": 2, "caRotation": "trust"}, ["aggregator-ca", "aggregator-ca-gen2"], "aggregator-ca"),
        ({"caGeneration": 2, "caRotation": "sign"}, ["aggregator-ca", "aggregator-ca-gen2"], "aggregator-ca-gen2"),
        ({"caGeneration": 2}, ["aggregator-ca-gen2"], "aggregator-ca-gen2"),
    ]:
        st = make_stack([h], pki={"hosts": ["127.0.0.1", "kubernetes", "kubernetes.default"], **keys})
        before = sums(h)
        out = st.up(update=True)
        assert out.ok, out.explain()
        assert cns(h.path(CA).read_bytes()) == trusted, keys
        assert issuer(h) == signer, keys
        assert_certs(h, "/etc/kubernetes/ssl", st.last.outputs)  # the files are the outputs, modes and all
        assert "no restart" in out["m1-flags"].stdout
        assert h.restarts() == restarts, f"{keys} restarted the apiserver"
        assert h.path("/etc/kubernetes/ssl/aggregator-key.pem").read_bytes() == key  # re-signed, same key
        # install-certs names every CA the file lost, by the sha256 of its DER: what the prune removes
        assert set(ca_rotation.untrusted([out["m1-certs"].stdout])) == before - sums(h), keys
        if "caRotation" in keys:
            old_ca = x509.load_pem_x509_certificates(h.path(CA).read_bytes())[0]
    assert f"aggregator-ca.pem no longer trusts the CA sha256:{ca_retirement.sha256(old_ca)}" in out["m1-certs"].stdout

    out = st.destroy()
    assert out.ok, out.explain()
    assert h.config_bytes() == original and not h.path(CA).exists()


def test_install_certs_takes_exactly_ca_certs_leading_certificates(lab, make_stack):
    h = lab.add_host("m1", "env-file")
    st = make_stack([h], pki={"hosts": ["127.0.0.1"], "caGeneration": 2, "caRotation": "trust"})
    certs = next(c for c in st.commands() if c["name"] == "m1-certs")
    script = host_files_text()
    pems = certs["stdin"][len(script):]
    blocks = re.findall(r"-----BEGIN [A-Z ]+-----\n.*?-----END [A-Z ]+-----\n", pems, re.S)
    assert len(blocks) == 4  # the old CA, the new CA, the proxy cert, its key
    for bad, why in [("".join(blocks[1:]), "exactly 3 CERTIFICATE blocks"), (pems + blocks[0], "more than 4 PEM blocks")]:
        r = st.runner.run(certs["connection"], certs["create"], script + bad)
        assert r.rc != 0 and why in r.stderr and "nothing written" in r.stderr, r.stderr
        assert not h.path("/etc/kubernetes/ssl").exists() or list(h.path("/etc/kubernetes/ssl").iterdir()) == []
    for count in ("0", "5", "x"):
        r = st.runner.run(certs["connection"], certs["create"].replace("--ca-certs 2", f"--ca-certs {count}"),
                          certs["stdin"])
        assert r.rc != 0 and "--ca-certs takes a number of CA certificates from 1 to 4" in r.stderr, r.stderr
    r = st.runner.run(certs["connection"], certs["create"], certs["stdin"])
    assert r.rc == 0, r.stderr
    assert cns(h.path(CA).read_bytes()) == ["aggregator-ca", "aggregator-ca-gen2"]
