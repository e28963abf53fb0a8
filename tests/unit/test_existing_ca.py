"""pki.existingCa: keep an existing aggregator / front-proxy CA (issue 10, deliverable 2).

The CAs are made here with `cryptography` in the shapes users have: the classic guide's cfssl CA (RSA
2048, CN=aggregator, the same DN as its proxy cert, PKCS#1 key) and kubeadm's front-proxy-ca (RSA 2048,
CN=front-proxy-ca, PKCS#1 key); PKCS#8, SEC1 and Ed25519 keys too. The program runs under the unit tier's
mocks, whose tls fake signs real certificates with the given CA key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.config import ConfigError, parse
from tests.support import mocks
from tests.support.program import run

NOW = dt.datetime.now(dt.UTC)
LOCALLY_SIGNED = "tls:index/locallySignedCert:LocallySignedCert"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
PATH = "metrics-aggregation:pki.existingCa"
# The classic guide's ca-csr.json / aggregator-csr.json "names".
GUIDE_DN = {"country": "CN", "province": "Shanghai", "locality": "Shanghai", "organization": "k8s",
            "organizationalUnit": "System"}
_OIDS = {"country": NameOID.COUNTRY_NAME, "province": NameOID.STATE_OR_PROVINCE_NAME,
         "locality": NameOID.LOCALITY_NAME, "organization": NameOID.ORGANIZATION_NAME,
         "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME}

def rsa_2048() -> rsa.RSAPrivateKey:
    """A fresh RSA 2048 key, as kubeadm and cfssl make for their CAs."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class Ca:
    cert_pem: str
    key_pem: str
    cert: x509.Certificate

    def config(self) -> dict:
        return {"certPem": self.cert_pem, "keyPem": self.key_pem}


def key_pem(key, form: str = "pkcs1", password: bytes | None = None) -> str:
    fmt = {"pkcs1": serialization.PrivateFormat.TraditionalOpenSSL, "sec1": serialization.PrivateFormat.TraditionalOpenSSL,
           "pkcs8": serialization.PrivateFormat.PKCS8}[form]
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc).decode()


def make_ca(
    key=None,
    cn: str = "front-proxy-ca",
    dn: dict | None = None,
    *,
    ca: bool | None = True,
    key_usage: str = "kubeadm",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    form: str = "pkcs1",
) -> Ca:
    """A CA certificate and key. key_usage: kubeadm (digitalSignature, keyEncipherment, keyCertSign), cfssl
    (keyCertSign, cRLSign), none (no extension) or leaf (digitalSignature, keyEncipherment only)."""
    key = key or rsa_2048()
    attrs = [x509.NameAttribute(_OIDS[k], v) for k, v in (dn or {}).items()]
    name = x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=3650))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    usages = {
        "kubeadm": dict(digital_signature=True, key_encipherment=True, key_cert_sign=True, crl_sign=False),
        "cfssl": dict(digital_signature=False, key_encipherment=False, key_cert_sign=True, crl_sign=True),
        "leaf": dict(digital_signature=True, key_encipherment=True, key_cert_sign=False, crl_sign=False),
    }.get(key_usage)
    if usages:
        builder = builder.add_extension(
            x509.KeyUsage(content_commitment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False, **usages),
            critical=True,
        )
    cert = builder.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    return Ca(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key, form), cert)


@pytest.fixture(scope="module")
def kubeadm() -> Ca:
    """kubeadm's front-proxy-ca: CN=front-proxy-ca, RSA 2048, the key as RSA PRIVATE KEY (PKCS#1)."""
    return make_ca(cn="front-proxy-ca")


@pytest.fixture(scope="module")
def cfssl() -> Ca:
    """The classic guide's CA: `cfssl gencert -initca` of a CSR with CN=aggregator and the guide's names."""
    return make_ca(cn="aggregator", dn=GUIDE_DN, key_usage="cfssl")


@pytest.fixture(scope="module")
def other_ca() -> Ca:
    return make_ca(ec.generate_private_key(ec.SECP256R1()), cn="someone-else", form="sec1")


def with_ca(stack_config, existing: dict, **pki):
    return stack_config(pki={"hosts": ["127.0.0.1"], "existingCa": existing, **pki})


def problems_of(cfg, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(cfg, **kw)
    return info.value.problems


def body(pem: str) -> list[str]:
    """The base64 lines of a PEM text: what must never appear in a message or an output."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----") and ":" not in line]


def assert_no_key_in(text: str, *keys: str) -> None:
    for key in keys:
        for line in body(key):
            assert line not in text, "key material in the text"


def pem_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


# --- the program graph ---------------------------------------------------------------------------


def test_kubeadm_front_proxy_ca_signs_the_proxy_cert_and_no_ca_is_created(stack_config, kubeadm):
    result = run(with_ca(stack_config, kubeadm.config(), keyAlgorithm="ECDSA"))
    # (metrics-server's serving CA and cert are tls resources of their own)
    aggregator_pki = [r for r in result.resources if r.type.startswith("tls:") and not r.name.startswith("metrics-server")]
    assert [(r.type, r.name) for r in aggregator_pki] == [
        (PRIVATE_KEY, "proxy-client-key"), ("tls:index/certRequest:CertRequest", "proxy-client"),
        (LOCALLY_SIGNED, "proxy-client")]
    assert aggregator_pki[0].inputs["algorithm"] == "ECDSA"  # the leaf keeps pki.keyAlgorithm
    [signed] = [r for r in result.of_type(LOCALLY_SIGNED) if r.name == "proxy-client"]
    assert signed.inputs["caCertPem"] == kubeadm.cert_pem
    assert "caPrivateKeyPem" in signed.secret_inputs
    leaf = pem_cert(result.outputs["proxyClientCertPem"])
    leaf.verify_directly_issued_by(kubeadm.cert)
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH])
    assert result.outputs["aggregatorCaCertPem"] == kubeadm.cert_pem
    assert result.outputs["requestheaderAllowedNames"] == ["aggregator"]


def test_the_masters_get_the_existing_ca_certificate_unchanged(stack_config, kubeadm):
    result = run(with_ca(stack_config, kubeadm.config()))
    certs = [c for c in result.commands if c["name"].endswith("-certs")]
    assert len(certs) == 3
    for c in certs:
        # the host script, then aggregator-ca.pem, aggregator.pem, aggregator-key.pem
        assert kubeadm.cert_pem + result.outputs["proxyClientCertPem"] in c["stdin"]


def test_the_ca_component_has_no_children(stack_config, kubeadm):
    result = run(with_ca(stack_config, kubeadm.config()))
    [ca] = [r for r in result.resources if r.type == "metrics-aggregation:pki:AggregatorCA"]
    assert [r.name for r in result.resources if r.parent == ca.urn] == []


def test_classic_guide_ca_with_the_same_dn_as_its_proxy_cert(stack_config, cfssl):
    """The guide's CA and proxy cert share one DN (CN=aggregator, C=CN, ...): the proxy cert's issuer then
    equals its subject. That is accepted: Go's x509 (kube-apiserver, metrics-server) looks the parent up by
    the raw issuer name and checks the signature with the CA key, with or without an authorityKeyIdentifier
    (x509.CreateCertificate writes none when the subject and issuer bytes are equal, as the fake does; both
    verified with Go 1.26 x509.Verify, ClientAuth). caCommonName, whatever it says, is not the existing CA's
    name."""
    cfg = with_ca(stack_config, cfssl.config(), subject=GUIDE_DN, proxyClientCommonName="aggregator",
                  caCommonName="aggregator")
    result = run(cfg)
    leaf = pem_cert(result.outputs["proxyClientCertPem"])
    assert leaf.subject == leaf.issuer == cfssl.cert.subject
    leaf.verify_directly_issued_by(cfssl.cert)
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert result.outputs["aggregatorCaCertPem"] == cfssl.cert_pem


def test_the_same_cn_is_still_refused_for_a_ca_the_program_creates(stack_config):
    problems = problems_of(stack_config(pki={"caCommonName": "aggregator", "proxyClientCommonName": "aggregator"}))
    assert problems[0].startswith("metrics-aggregation:pki.caCommonName: 'aggregator' equals proxyClientCommonName")


def test_ca_validity_hours_does_not_apply_to_an_existing_ca(stack_config, kubeadm):
    s = parse(with_ca(stack_config, kubeadm.config(), caValidityHours=100, certValidityHours=8760))
    assert s.pki.existing_ca is not None


def test_the_ca_not_after_is_the_existing_certificates(stack_config, kubeadm):
    s = parse(with_ca(stack_config, kubeadm.config()))
    assert s.pki.existing_ca.not_after() == kubeadm.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert s.pki.existing_ca.key_algorithm() == "RSA"


def test_no_ca_key_in_outputs_commands_or_settings(stack_config, kubeadm):
    result = run(with_ca(stack_config, kubeadm.config()))
    signing = result.settings.pki.existing_ca.signing_key_pem()
    assert_no_key_in(repr(result.outputs), kubeadm.key_pem, signing)
    assert_no_key_in(repr(result.settings), kubeadm.key_pem, signing)
    for c in result.commands:
        assert_no_key_in(repr(c), kubeadm.key_pem, signing)


# --- key forms: what the provider reads ----------------------------------------------------------

KEY_FORMS = [
    ("rsa pkcs1", lambda: rsa_2048(), "pkcs1", "RSA"),
    ("rsa pkcs8", lambda: rsa_2048(), "pkcs8", "RSA"),
    ("ec sec1", lambda: ec.generate_private_key(ec.SECP256R1()), "sec1", "ECDSA"),
    ("ec pkcs8", lambda: ec.generate_private_key(ec.SECP384R1()), "pkcs8", "ECDSA"),
    ("ed25519 pkcs8", lambda: ed25519.Ed25519PrivateKey.generate(), "pkcs8", "ED25519"),
]


@pytest.mark.parametrize("make_key, form, algorithm", [k[1:] for k in KEY_FORMS], ids=[k[0] for k in KEY_FORMS])
def test_key_forms_are_read_and_handed_to_the_provider_as_pkcs8(stack_config, make_key, form, algorithm):
    key = make_key()
    ca = make_ca(key, form=form)
    s = parse(with_ca(stack_config, ca.config()))
    signing = s.pki.existing_ca.signing_key_pem()
    assert signing.startswith("-----BEGIN PRIVATE KEY-----")
    loaded = serialization.load_pem_private_key(signing.encode(), None)
    assert loaded.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert s.pki.existing_ca.key_algorithm() == algorithm


@pytest.mark.parametrize("make_key, form", [k[1:3] for k in KEY_FORMS], ids=[k[0] for k in KEY_FORMS])
def test_the_unit_fake_signs_with_each_key_form(make_key, form):
    """tests/support/mocks.py, like pulumi-tls, reads a CA key given as PKCS#1, SEC1 or PKCS#8."""
    ca = make_ca(make_key(), form=form)
    leaf_key = mocks.fake_private_key("leaf", {"algorithm": "ECDSA", "ecdsaCurve": "P256"}, fresh=True)
    csr = mocks.fake_cert_request({"privateKeyPem": leaf_key["privateKeyPem"], "subject": {"commonName": "aggregator"}})
    out = mocks.fake_locally_signed_cert({"certRequestPem": csr["certRequestPem"], "caCertPem": ca.cert_pem,
                                          "caPrivateKeyPem": ca.key_pem, "validityPeriodHours": 1,
                                          "allowedUses": ["client_auth"]})
    pem_cert(out["certPem"]).verify_directly_issued_by(ca.cert)


def test_a_re_encoded_key_gives_the_provider_the_same_input(stack_config, kubeadm):
    """caPrivateKeyPem forces a new proxy cert: converting the same key (PKCS#1 -> PKCS#8) must not."""
    key = serialization.load_pem_private_key(kubeadm.key_pem.encode(), None)
    pkcs1 = run(with_ca(stack_config, kubeadm.config()))
    pkcs8 = run(with_ca(stack_config, {"certPem": kubeadm.cert_pem, "keyPem": key_pem(key, "pkcs8")}))
    [a], [b] = ([r.inputs for r in x.of_type(LOCALLY_SIGNED) if r.name == "proxy-client"] for x in (pkcs1, pkcs8))
    assert a["caPrivateKeyPem"] == b["caPrivateKeyPem"]
    assert a["caCertPem"] == b["caCertPem"]


def test_an_ec_parameters_block_before_the_key_is_dropped(stack_config):
    """`openssl ecparam -genkey` writes EC PARAMETERS first; the tls provider reads only the first block."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca = make_ca(key, form="sec1")
    params = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    s = parse(with_ca(stack_config, {"certPem": ca.cert_pem, "keyPem": params + ca.key_pem}))
    assert s.pki.existing_ca.signing_key_pem().count("-----BEGIN") == 1


# --- files and the text written to the masters ---------------------------------------------------


def test_cert_and_key_files_are_read_like_cluster_ca_cert_file(stack_config, kubeadm, tmp_path):
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "front-proxy-ca.crt").write_text(kubeadm.cert_pem)
    (tmp_path / "pki" / "front-proxy-ca.key").write_text(kubeadm.key_pem)
    s = parse(with_ca(stack_config, {"certFile": "pki/front-proxy-ca.crt", "keyFile": "pki/front-proxy-ca.key"}),
              base_dir=tmp_path)
    assert s.pki.existing_ca.cert_pem == kubeadm.cert_pem
    assert s.pki.existing_ca.key_pem.get_secret_value() == kubeadm.key_pem
    assert s.pki.existing_ca.cert_file == "pki/front-proxy-ca.crt"


def test_a_file_and_secret_config_mix(stack_config, kubeadm, tmp_path):
    (tmp_path / "ca.crt").write_text(kubeadm.cert_pem)
    result = run(with_ca(stack_config, {"certFile": str(tmp_path / "ca.crt"), "keyPem": kubeadm.key_pem}))
    pem_cert(result.outputs["proxyClientCertPem"]).verify_directly_issued_by(kubeadm.cert)
    assert result.outputs["aggregatorCaCertPem"] == kubeadm.cert_pem


def test_cert_pem_without_its_final_newline_is_written_with_it(stack_config, kubeadm):
    """`pulumi config set` without --raw strips the final newline of the file it was given."""
    s = parse(with_ca(stack_config, {"certPem": kubeadm.cert_pem.rstrip("\n"), "keyPem": kubeadm.key_pem}))
    assert s.pki.existing_ca.cert_pem == kubeadm.cert_pem


def test_text_around_the_certificate_is_dropped(stack_config, kubeadm):
    """`openssl x509 -in ca.pem -text` output: the masters get the certificate alone (the host script
    accepts no text outside PEM blocks)."""
    text = f"subject=CN = front-proxy-ca\n\n{kubeadm.cert_pem}"
    s = parse(with_ca(stack_config, {"certPem": text, "keyPem": kubeadm.key_pem}))
    assert s.pki.existing_ca.cert_pem == kubeadm.cert_pem


# --- errors ----------------------------------------------------------------------------------------


def one_problem(stack_config, existing: dict, *secrets: str, **pki) -> str:
    problems = problems_of(with_ca(stack_config, existing, **pki))
    assert len(problems) == 1, problems
    assert_no_key_in("\n".join(problems), *secrets)
    return problems[0]


def test_missing_key(stack_config, kubeadm):
    assert one_problem(stack_config, {"certPem": kubeadm.cert_pem}) == (
        f"{PATH}.keyPem: (missing) is required with pki.existingCa: set the CA's private key as a secret with "
        "`pulumi config set --secret --path pki.existingCa.keyPem < front-proxy-ca.key`, or set "
        "pki.existingCa.keyFile to its path"
    )


def test_an_empty_existing_ca(stack_config):
    problems = problems_of(with_ca(stack_config, {}))
    assert [p.partition(" is required")[0] for p in problems] == [f"{PATH}.certPem: (missing)", f"{PATH}.keyPem: (missing)"]


def test_missing_certificate(stack_config, kubeadm):
    problem = one_problem(stack_config, {"keyPem": kubeadm.key_pem}, kubeadm.key_pem)
    assert problem.startswith(f"{PATH}.certPem: (missing) is required with pki.existingCa")


def test_both_sources_of_one_item(stack_config, kubeadm, tmp_path):
    (tmp_path / "k").write_text(kubeadm.key_pem)
    (tmp_path / "c").write_text(kubeadm.cert_pem)
    problems = problems_of(with_ca(stack_config, {**kubeadm.config(), "keyFile": str(tmp_path / "k"),
                                                  "certFile": str(tmp_path / "c")}))
    assert problems == [
        f"{PATH}.certFile: '{tmp_path}/c' is set together with certPem; choose one: remove certPem to read the CA "
        "certificate from the file, or remove certFile",
        f"{PATH}.keyFile: '{tmp_path}/k' is set together with keyPem; choose one: remove keyPem to read the CA's "
        "private key from the file, or remove keyFile",
    ]


def test_key_does_not_match_the_certificate(stack_config, kubeadm, other_ca):
    problem = one_problem(stack_config, {"certPem": kubeadm.cert_pem, "keyPem": other_ca.key_pem}, other_ca.key_pem)
    assert problem == (
        f"{PATH}.keyPem: '<secret>' does not match the certificate of pki.existingCa.certPem (CN=front-proxy-ca); "
        "give that CA certificate's own private key"
    )


def test_key_file_that_does_not_match_names_the_file(stack_config, kubeadm, other_ca, tmp_path):
    (tmp_path / "ca.key").write_text(other_ca.key_pem)
    problem = one_problem(stack_config, {"certPem": kubeadm.cert_pem, "keyFile": str(tmp_path / "ca.key")},
                          other_ca.key_pem)
    assert problem.startswith(f"{PATH}.keyFile: '{tmp_path}/ca.key' does not match the certificate")


@pytest.mark.parametrize("ca_flag, usage", [(None, "none"), (False, "leaf")], ids=["no basicConstraints", "CA:FALSE"])
def test_not_a_ca(stack_config, ca_flag, usage):
    leaf = make_ca(ec.generate_private_key(ec.SECP256R1()), cn="aggregator", ca=ca_flag, key_usage=usage, form="sec1")
    problems = problems_of(with_ca(stack_config, leaf.config()))
    assert problems[0].startswith(
        f"{PATH}.certPem: 'CN=aggregator' is not a CA certificate (basicConstraints CA:TRUE is missing)")
    if usage == "leaf":
        assert problems[1].startswith(f"{PATH}.certPem: 'CN=aggregator' has a key usage without keyCertSign")
    assert len(problems) == (2 if usage == "leaf" else 1)


def test_ca_without_key_cert_sign(stack_config):
    ca = make_ca(ec.generate_private_key(ec.SECP256R1()), key_usage="leaf", form="sec1")
    problem = one_problem(stack_config, ca.config())
    assert "has a key usage without keyCertSign, so kube-apiserver would refuse what it signs" in problem


def test_expired_ca(stack_config):
    ca = make_ca(ec.generate_private_key(ec.SECP256R1()), not_before=NOW - dt.timedelta(days=400),
                 not_after=NOW - dt.timedelta(days=10, hours=1), form="sec1")
    problem = one_problem(stack_config, ca.config())
    assert problem.startswith(f"{PATH}.certPem: 'CN=front-proxy-ca' expired on ")
    assert "(10 days ago): renew the CA certificate" in problem


def test_ca_not_valid_yet(stack_config):
    ca = make_ca(ec.generate_private_key(ec.SECP256R1()), not_before=NOW + dt.timedelta(days=2), form="sec1")
    assert "is not valid before" in one_problem(stack_config, ca.config())


def test_ca_that_expires_before_the_proxy_cert_would(stack_config):
    ca = make_ca(ec.generate_private_key(ec.SECP256R1()), not_after=NOW + dt.timedelta(days=100, minutes=30),
                 form="sec1")
    problem = one_problem(stack_config, ca.config(), certValidityHours=8760)
    assert problem.startswith(f"{PATH}.certPem: 'CN=front-proxy-ca' expires on ")
    assert ", 264 days before the proxy-client certificate would (now + pki.certValidityHours 8760 = " in problem
    assert problem.endswith("lower pki.certValidityHours to at most 2400, or renew the CA")
    # the same CA with a shorter proxy cert is fine
    assert parse(with_ca(stack_config, ca.config(), certValidityHours=2400)).pki.existing_ca is not None


def test_ca_that_expires_within_the_early_renewal_window(stack_config):
    ca = make_ca(ec.generate_private_key(ec.SECP256R1()), not_after=NOW + dt.timedelta(hours=500, minutes=5),
                 form="sec1")
    problem = one_problem(stack_config, ca.config())
    assert problem.endswith(
        "lower pki.certValidityHours to at most 500 (and pki.earlyRenewalHours below that), or renew the CA")


@pytest.mark.parametrize("same", ["certificate", "key"])
def test_the_cluster_ca_is_refused(stack_config, kubeadm, same):
    if same == "certificate":
        cluster = kubeadm.cert_pem
    else:  # the same key under another certificate
        key = serialization.load_pem_private_key(kubeadm.key_pem.encode(), None)
        cluster = make_ca(key, cn="kubernetes").cert_pem
    problem = one_problem(stack_config, kubeadm.config(), kubeadm.key_pem, clusterCaCertPem=cluster)
    assert problem.startswith(
        f"{PATH}.certPem: 'CN=front-proxy-ca' is the cluster CA (the same {same} as pki.clusterCaCertPem); "
        "kube-apiserver checks --requestheader-client-ca-file before --client-ca-file")


def test_the_cluster_ca_is_refused_from_the_cluster_ca_file_too(stack_config, kubeadm, other_ca, tmp_path):
    (tmp_path / "ca.crt").write_text(other_ca.cert_pem + kubeadm.cert_pem)  # a bundle
    problem = one_problem(stack_config, kubeadm.config(), kubeadm.key_pem, clusterCaCertFile=str(tmp_path / "ca.crt"))
    assert "is the cluster CA (the same certificate as pki.clusterCaCertFile)" in problem


def test_another_cluster_ca_is_fine(stack_config, kubeadm, other_ca):
    assert parse(with_ca(stack_config, kubeadm.config(), clusterCaCertPem=other_ca.cert_pem)).pki.existing_ca


BROKEN_BODY = "-----BEGIN {0}-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END {0}-----\n"


def test_unparseable_certificate(stack_config, kubeadm):
    problem = one_problem(stack_config, {"certPem": BROKEN_BODY.format("CERTIFICATE"), "keyPem": kubeadm.key_pem},
                          kubeadm.key_pem)
    assert problem.startswith(f"{PATH}.certPem: '-----BEGIN CERTIFICATE-----\\nbm90IGEga2V5' is not a PEM certificate")


@pytest.mark.parametrize("label", ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY"])
def test_unparseable_key(stack_config, kubeadm, label):
    problem = one_problem(stack_config, {"certPem": kubeadm.cert_pem, "keyPem": BROKEN_BODY.format(label)},
                          BROKEN_BODY.format(label))
    assert problem == (
        f"{PATH}.keyPem: '<secret>' is not a readable {label} (PKCS#1, SEC1 and PKCS#8 PEM keys are read); check "
        "that it was copied whole"
    )


def test_a_certificate_where_the_key_belongs(stack_config, kubeadm):
    problem = one_problem(stack_config, {"certPem": kubeadm.cert_pem, "keyPem": kubeadm.cert_pem})
    assert problem.startswith(f"{PATH}.keyPem: '<secret>' holds no PEM private key")


@pytest.mark.parametrize("form", ["pkcs8", "pkcs1"], ids=["ENCRYPTED PRIVATE KEY", "Proc-Type 4,ENCRYPTED"])
def test_encrypted_key(stack_config, form):
    key = rsa_2048()
    ca = make_ca(key)
    encrypted = key_pem(key, form, password=b"hunter22")
    problem = one_problem(stack_config, {"certPem": ca.cert_pem, "keyPem": encrypted}, encrypted)
    assert problem.startswith(f"{PATH}.keyPem: '<secret>' is an encrypted private key, and the program cannot ask "
                              "for its passphrase: decrypt it (`openssl pkey -in ca-key.pem -out ca-key.plain.pem`)")


def test_key_inside_the_certificate_text(stack_config, kubeadm):
    problem = one_problem(stack_config, {"certPem": kubeadm.cert_pem + kubeadm.key_pem, "keyPem": kubeadm.key_pem},
                          kubeadm.key_pem)
    assert "holds a private key; the certificate goes to every master as aggregator-ca.pem" in problem


def test_cert_and_key_swapped(stack_config, kubeadm):
    problems = problems_of(with_ca(stack_config, {"certPem": kubeadm.key_pem, "keyPem": kubeadm.cert_pem}))
    assert [p.partition(" holds")[0] for p in problems] == [f"{PATH}.certPem: '<secret>'", f"{PATH}.keyPem: '<secret>'"]
    assert "MII" not in "\n".join(problems)  # not even the start of the key's DER


def test_key_inside_the_certificate_file(stack_config, kubeadm, tmp_path):
    (tmp_path / "both.pem").write_text(kubeadm.cert_pem + kubeadm.key_pem)
    problem = one_problem(stack_config, {"certFile": str(tmp_path / "both.pem"), "keyPem": kubeadm.key_pem},
                          kubeadm.key_pem)
    assert problem.startswith(f"{PATH}.certFile: '{tmp_path}/both.pem' holds a private key ({tmp_path}/both.pem); "
                              "the file goes to every master as aggregator-ca.pem")


def test_a_bundle_of_certificates(stack_config, kubeadm, other_ca):
    problem = one_problem(stack_config, {"certPem": kubeadm.cert_pem + other_ca.cert_pem, "keyPem": kubeadm.key_pem})
    assert "holds 2 certificates; give only the CA certificate whose private key is in" in problem


def test_missing_key_file(stack_config, kubeadm, tmp_path):
    problems = problems_of(with_ca(stack_config, {"certPem": kubeadm.cert_pem, "keyFile": "front-proxy-ca.key"}),
                           base_dir=tmp_path)
    assert problems == [
        f"{PATH}.keyFile: 'front-proxy-ca.key' cannot be read: {tmp_path}/front-proxy-ca.key (relative to the "
        f"project directory {tmp_path}) does not exist; create it with the existing aggregator CA's private key, "
        "e.g. a copy of /etc/kubernetes/pki/front-proxy-ca.key (kubeadm) or cfssl's aggregator-ca-key.pem, or fix "
        "the path"
    ]


def test_weak_rsa_key(stack_config):
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ca = make_ca(key)
    problem = one_problem(stack_config, ca.config(), ca.key_pem)
    assert problem.startswith(f"{PATH}.keyPem: '<secret>' is an RSA key of 1024 bits, too weak to sign with")


def test_misspelt_key_never_shows_its_value(stack_config, kubeadm):
    problem = one_problem(stack_config, {"certPem": kubeadm.cert_pem, "keyPEM": kubeadm.key_pem}, kubeadm.key_pem)
    assert problem == (
        f"{PATH}.keyPEM: '<secret>' is not a known key of pki.existingCa; use certPem or certFile, and keyPem or keyFile"
    )


def test_existing_ca_given_as_the_key_itself(stack_config, kubeadm):
    problems = problems_of(stack_config(pki={"existingCa": kubeadm.key_pem}))
    assert problems == [f"{PATH}: '<str>' must be a mapping {{certPem or certFile, keyPem or keyFile}}; see "
                        "pki.existingCa in the config reference, docs/config.md"]


def test_key_pem_that_is_not_a_string(stack_config, kubeadm):
    problem = one_problem(stack_config, {"certPem": kubeadm.cert_pem, "keyPem": ["a", "list"]})
    assert problem == f"{PATH}.keyPem: '<secret>' must be the PEM text of the CA's private key (a string)"


def test_errors_stop_the_program_before_any_resource(stack_config, kubeadm, other_ca):
    with pytest.raises(ConfigError) as info:
        run(with_ca(stack_config, {"certPem": kubeadm.cert_pem, "keyPem": other_ca.key_pem}))
    assert all(r.type == "pulumi:pulumi:Stack" for r in info.value.registrations)
    assert_no_key_in(str(info.value), other_ca.key_pem)
    assert "does not match the certificate" in str(info.value)
