"""Pulumi mocks whose tls resources are real: keys and certificates made with `cryptography`.

Each fake follows the pulumi-tls resource's inputs the way the provider does (subject, SANs, key
usages, validity), so the unit tests check real certificates: chains verify, EKUs are present,
CNs and SANs are what the program asked for. The monitor also records what the mock runtime alone
does not expose: parent, dependencies, ignoreChanges, protect, replacement_trigger and which inputs were
secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from components.rfc3339 import parse_time

_CURVES = {"P224": ec.SECP224R1, "P256": ec.SECP256R1, "P384": ec.SECP384R1, "P521": ec.SECP521R1}
_EKU = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "any_extended": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}
_KEY_USAGE = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "cert_signing", "crl_signing", "encipher_only", "decipher_only",
)
_NAME_FIELDS = [
    ("country", NameOID.COUNTRY_NAME),
    ("province", NameOID.STATE_OR_PROVINCE_NAME),
    ("locality", NameOID.LOCALITY_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
    ("organizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("postalCode", NameOID.POSTAL_CODE),
    ("commonName", NameOID.COMMON_NAME),
]
# A fixed "now" keeps runs comparable; certificates are still checked against their own window.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
# Key generation dominates a run; keys are reused per (resource name, spec) unless asked for fresh ones.
_KEY_CACHE: dict[tuple[str, str, int | None, str | None], Any] = {}


def _key(name: str, algorithm: str, rsa_bits: int | None, curve: str | None, fresh: bool) -> Any:
    spec = (name, algorithm, rsa_bits, curve)
    if not fresh and spec in _KEY_CACHE:
        return _KEY_CACHE[spec]
    if algorithm == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(rsa_bits or 2048))
    elif algorithm == "ECDSA":
        key = ec.generate_private_key(_CURVES[curve or "P224"]())
    elif algorithm == "ED25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"tls fake: unsupported algorithm {algorithm!r}")
    _KEY_CACHE.setdefault(spec, key)
    return key


def _name(subject: dict | None) -> x509.Name:
    subject = subject or {}
    attrs = []
    for key, oid in _NAME_FIELDS:
        if subject.get(key):
            attrs.append(x509.NameAttribute(oid, str(subject[key])))
    return x509.Name(attrs)


def _sign_hash(key: Any) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


# pulumi-tls's times as the released provider writes them (terraform-provider-tls: time.Now()-based,
# time.MarshalText): RFC 3339 with nanoseconds, in the provider's local zone, so every consumer of the outputs
# is tested on that format. The certificate holds whole seconds: its notAfter is that time cut to the second.
PROVIDER_ZONE = dt.timezone(dt.timedelta(hours=-4))
PROVIDER_NANOS = 750041123


def _rfc3339(t: dt.datetime) -> str:
    """`t` (whole seconds) as the provider writes the time it made the certificate from, e.g.
    2027-11-26T17:05:17.750041123-04:00 (Go's RFC3339Nano drops trailing zeros of the fraction)."""
    text = t.astimezone(PROVIDER_ZONE).isoformat(timespec="seconds")
    fraction = f"{PROVIDER_NANOS:09d}".rstrip("0")
    return text[:19] + (f".{fraction}" if fraction else "") + text[19:]


def cert_second(text: str) -> dt.datetime:
    """The certificate time that a provider time stands for: the same instant cut to whole seconds (x509)."""
    return parse_time(text).replace(microsecond=0)


def _build_cert(inputs: dict, subject: x509.Name, public_key: Any, sans: tuple[list, list], issuer: x509.Name,
                signing_key: Any, issuer_public_key: Any) -> dict:
    uses = list(inputs.get("allowedUses") or [])
    hours = int(inputs["validityPeriodHours"])
    not_before = NOW
    not_after = NOW + dt.timedelta(hours=hours)
    is_ca = bool(inputs.get("isCaCertificate"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    ku = {u: u in uses for u in _KEY_USAGE}
    if any(ku.values()):
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=ku["digital_signature"], content_commitment=ku["content_commitment"],
                key_encipherment=ku["key_encipherment"], data_encipherment=ku["data_encipherment"],
                key_agreement=ku["key_agreement"], key_cert_sign=ku["cert_signing"],
                crl_sign=ku["crl_signing"],
                encipher_only=ku["encipher_only"] and ku["key_agreement"],
                decipher_only=ku["decipher_only"] and ku["key_agreement"],
            ),
            critical=True,
        )
    ekus = [_EKU[u] for u in uses if u in _EKU]  # unknown strings are ignored, as the provider does
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    ips, dns = sans
    if ips or dns:
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if inputs.get("setSubjectKeyId") or is_ca:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if issuer_public_key is not None and issuer != subject:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False
        )
    cert = builder.sign(signing_key, _sign_hash(signing_key))
    return {
        "certPem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "validityStartTime": _rfc3339(not_before),
        "validityEndTime": _rfc3339(not_after),
        "readyForRenewal": False,
    }


def _load_key(pem: str) -> Any:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def fake_private_key(name: str, inputs: dict, fresh: bool) -> dict:
    key = _key(name, inputs.get("algorithm", "RSA"), inputs.get("rsaBits", 2048), inputs.get("ecdsaCurve"), fresh)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return {
        **inputs,
        "privateKeyPem": pem,
        "privateKeyPemPkcs8": pem,
        "publicKeyPem": pub,
        "publicKeyFingerprintSha256": hashlib.sha256(pub.encode()).hexdigest(),
    }


def fake_self_signed_cert(inputs: dict) -> dict:
    key = _load_key(inputs["privateKeyPem"])
    name = _name(inputs.get("subject"))
    sans = (list(inputs.get("ipAddresses") or []), list(inputs.get("dnsNames") or []))
    return {**inputs, **_build_cert(inputs, name, key.public_key(), sans, name, key, key.public_key())}


def fake_cert_request(inputs: dict) -> dict:
    key = _load_key(inputs["privateKeyPem"])
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(inputs.get("subject")))
    ips, dns = list(inputs.get("ipAddresses") or []), list(inputs.get("dnsNames") or [])
    if ips or dns:
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, _sign_hash(key))
    return {**inputs, "certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}


def fake_locally_signed_cert(inputs: dict) -> dict:
    csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    ca_key = _load_key(inputs["caPrivateKeyPem"])
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = ([str(i) for i in san.get_values_for_type(x509.IPAddress)], san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = ([], [])
    out = _build_cert(inputs, csr.subject, csr.public_key(), sans, ca_cert.subject, ca_key, ca_cert.public_key())
    return {**inputs, **out}


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    inputs: dict
    state: dict
    parent: str
    dependencies: list[str]
    ignore_changes: list[str]
    secret_inputs: set[str] = field(default_factory=set)
    custom: bool = True
    protect: bool = False  # the `protect` resource option as the engine receives it
    replacement_trigger: Any = None  # the `replacement_trigger` resource option as sent (None: not sent)


class Mocks(pulumi.runtime.Mocks):
    """tls resources are real; everything else echoes its inputs (plus a few computed fields)."""

    def __init__(self, fresh_keys: bool = False):
        self.fresh_keys = fresh_keys

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        t, inputs = args.typ, plain(dict(args.inputs))
        if t == "tls:index/privateKey:PrivateKey":
            state = fake_private_key(args.name, inputs, self.fresh_keys)
        elif t == "tls:index/selfSignedCert:SelfSignedCert":
            state = fake_self_signed_cert(inputs)
        elif t == "tls:index/certRequest:CertRequest":
            state = fake_cert_request(inputs)
        elif t == "tls:index/locallySignedCert:LocallySignedCert":
            state = fake_locally_signed_cert(inputs)
        elif t == "command:remote:Command":
            state = {**inputs, "stdout": "", "stderr": ""}
        else:
            state = inputs
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def plain(value: Any) -> Any:
    """The value with every secret envelope removed."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return plain(value.get("value"))
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _secret_paths(value: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return {prefix or "."}
        for k, v in value.items():
            out |= _secret_paths(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out |= _secret_paths(v, f"{prefix}[{i}]")
    return out


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = rpc.deserialize_properties(request.object)  # secrets still in their envelopes
            reg = self.resources[response.urn] if response.urn in self.resources else None
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    inputs=plain(raw),
                    state=reg.state if reg else {},
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    ignore_changes=list(request.ignoreChanges),
                    secret_inputs=_secret_paths(raw),
                    custom=request.custom,
                    protect=bool(request.protect),
                    replacement_trigger=(
                        json_format.MessageToDict(request.replacement_trigger)
                        if request.HasField("replacement_trigger") else None
                    ),
                )
            )
        return response
