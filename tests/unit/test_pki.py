"""The certificates are real (tls fakes built with `cryptography`): check them as a kube-apiserver would."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components import pki
from components.config import parse
from tests.support.mocks import cert_second
from tests.support.program import run
from tests.unit.hostkeys import host_key


def cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def cn(c: x509.Certificate) -> str:
    return c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@pytest.fixture(scope="module")
def dev_like(ssh_private_key):
    cfg = {
        "masters": [
            {"name": "k8s-master", "address": "198.18.0.101", "hostKey": host_key(0)},
            {"name": "k8s-master2", "address": "2001:db8::2", "hostKey": host_key(1)},
            {"name": "k8s-master3", "address": "Master3.Example.Internal", "hostKey": host_key(2)},
        ],
        "ssh": {"privateKey": ssh_private_key},
        "pki": {
            "subject": {"organization": "k8s", "organizationalUnit": "System", "country": "CN",
                        "province": "Shanghai", "locality": "Shanghai"},
            "hosts": ["127.0.0.1", "198.18.0.101", "kubernetes", "kubernetes.default.svc.cluster.local"],
            "caValidityHours": 87600, "certValidityHours": 8760, "earlyRenewalHours": 720,
        },
    }
    return run(cfg)


def test_chain_verifies(dev_like):
    ca = cert(dev_like.outputs["aggregatorCaCertPem"])
    leaf = cert(dev_like.outputs["proxyClientCertPem"])
    leaf.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)


def test_ca_profile(dev_like):
    ca = cert(dev_like.outputs["aggregatorCaCertPem"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.digital_signature and ku.key_encipherment
    assert cn(ca) == "aggregator-ca"
    assert isinstance(ca.public_key(), rsa.RSAPublicKey) and ca.public_key().key_size == 2048


def test_proxy_client_profile(dev_like):
    leaf = cert(dev_like.outputs["proxyClientCertPem"])
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # client_auth and nothing else
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_cn_is_in_allowed_names_and_flags(dev_like):
    leaf = cert(dev_like.outputs["proxyClientCertPem"])
    assert cn(leaf) in dev_like.outputs["requestheaderAllowedNames"]
    assert dev_like.outputs["apiserverFlags"]["--requestheader-allowed-names"].split(",") == [cn(leaf)]


def test_subjects_differ_and_carry_the_configured_names(dev_like):
    ca = cert(dev_like.outputs["aggregatorCaCertPem"])
    leaf = cert(dev_like.outputs["proxyClientCertPem"])
    assert ca.subject != leaf.subject
    assert leaf.issuer == ca.subject
    for c in (ca, leaf):
        assert c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "k8s"
        assert c.subject.get_attributes_for_oid(NameOID.STATE_OR_PROVINCE_NAME)[0].value == "Shanghai"


def test_sans_cover_every_master_and_extra_host(dev_like):
    leaf = cert(dev_like.outputs["proxyClientCertPem"])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    dns = set(san.get_values_for_type(x509.DNSName))
    assert ips == {"198.18.0.101", "2001:db8::2", "127.0.0.1"}  # de-duplicated
    assert dns == {"master3.example.internal", "kubernetes", "kubernetes.default.svc.cluster.local"}
    assert all(ipaddress.ip_address(i) for i in ips)


def test_validity_from_config(dev_like):
    ca = cert(dev_like.outputs["aggregatorCaCertPem"])
    leaf = cert(dev_like.outputs["proxyClientCertPem"])
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == dt.timedelta(hours=87600)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=8760)
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
    not_after = cert_second(dev_like.outputs["proxyClientCertNotAfter"])
    assert not_after == leaf.not_valid_after_utc
    [lsc] = [r for r in dev_like.of_type("tls:index/locallySignedCert:LocallySignedCert") if r.name == "proxy-client"]
    assert lsc.inputs["earlyRenewalHours"] == 720


def test_ecdsa_keys(stack_config):
    result = run(stack_config(pki={"keyAlgorithm": "ECDSA", "ecdsaCurve": "P-384"}))
    for name in ("aggregatorCaCertPem", "proxyClientCertPem"):
        key = cert(result.outputs[name]).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    keys = result.of_type("tls:index/privateKey:PrivateKey")
    assert {k.inputs["algorithm"] for k in keys} == {"ECDSA"} and "rsaBits" not in keys[0].inputs


def test_ca_key_never_reaches_a_master(stack_config):
    result = run(stack_config())
    ca_key = next(r for r in result.of_type("tls:index/privateKey:PrivateKey") if r.name == "aggregator-ca-key")
    ca_key_pem = ca_key.state["privateKeyPem"]
    for c in result.commands:
        assert ca_key_pem not in (c["stdin"] or "")
    stdin = result.named("master1-certs").inputs["stdin"]
    assert stdin.count("BEGIN CERTIFICATE") == 2 and stdin.count("PRIVATE KEY-----") == 2  # begin + end


def test_a_row_is_signed_only_by_the_ca_its_table_row_names(stack_config):
    """pki.issue refuses, before registering anything, a leaf signed by another CA or a CA given an issuer."""
    settings = parse(stack_config())
    serving_ca = pki.Issued(pki.SERVING_CA, cert_pem=None, key_pem=None, not_after=None)
    with pytest.raises(ValueError, match="proxy-client is signed by aggregator-ca, not metrics-server-serving-ca"):
        pki.issue(pki.PROXY_CLIENT, settings, "proxy-client", None, issuer=serving_ca)
    with pytest.raises(ValueError, match="proxy-client is signed by aggregator-ca, not itself"):
        pki.issue(pki.PROXY_CLIENT, settings, "proxy-client", None)
    with pytest.raises(ValueError, match="aggregator-ca is signed by itself, not metrics-server-serving-ca"):
        pki.issue(pki.AGGREGATOR_CA, settings, "aggregator-ca", None, issuer=serving_ca)


def test_requestheader_allowed_names_is_the_proxy_client_cn(stack_config):
    assert pki.requestheader_allowed_names(parse(stack_config(pki={"proxyClientCommonName": "front-proxy-client"}))) \
        == ["front-proxy-client"]
