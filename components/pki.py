"""The program's PKI as one declarative table (kubeadm's certlist.go), and the one builder of its rows.

    TABLE row                    signed by                    read from                  goes to
    aggregator-ca                itself                       the stack (pki.*)          every master
    proxy-client                 aggregator-ca                the stack (pki.*, masters)  every master
    metrics-server-serving-ca    itself                       metrics-server's Service   the cluster
    metrics-server-serving       metrics-server-serving-ca    metrics-server's Service   the cluster

Each row gives the CN, issuer, usages, validity and SANs, as values or as where in its source they come
from; the comment above it names the files it becomes. `issue` builds a row as children of the component
that owns it: AggregatorCA and ProxyClientCert here (kubeadm's front-proxy-ca / front-proxy-client),
MetricsServer for its serving pair.

With pki.existingCa the aggregator-ca row is not built: the CA is one that exists already (the classic
guide's cfssl CA, kubeadm's front-proxy-ca), the proxy-client certificate is signed with its key (from
config, a secret Output) and the masters get its certificate as given, so extension apiservers see no CA
change.

The aggregator CA is a CA of its own, never the cluster CA: kube-apiserver checks
--requestheader-client-ca-file before --client-ca-file, so a shared CA locks out every ordinary client
certificate whose CN is not in --requestheader-allowed-names (kubelets, controllers, users).
The CA private keys stay in Pulumi state (encrypted); masters only receive the CA certificate.
The aggregator CA's key and certificate are `protect`ed unless pki.protectCa is false (the row's `protect`).
A change of pki.renewNow replaces the proxy-client certificate alone (the row's `renew_trigger`); so does
its end entering earlyRenewalHours (the provider's own renewal). The masters get it by the certs steps only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pulumi
import pulumi_tls as tls

from components import config, contract
from components.config import ExistingCa, KeyAlgorithm, Pki, Settings

C = TypeVar("C")  # what a row is read from: Settings (the front-proxy rows) or a Service (the serving rows)
V = TypeVar("V")
Read = Callable[[C], V] | V  # a fixed value, or where in the source it comes from


@dataclass(frozen=True)
class KeySpec:
    algorithm: str
    rsa_bits: int | None = None
    ecdsa_curve: str | None = None


@dataclass(frozen=True)
class Sans:
    ips: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    """A Service in the cluster: what a serving certificate's row is read from."""

    name: str
    namespace: str

    @property
    def dns_names(self) -> tuple[str, ...]:
        """Every name a client in the cluster may reach it by."""
        n, ns = self.name, self.namespace
        return (n, f"{n}.{ns}", f"{n}.{ns}.svc", f"{n}.{ns}.svc.cluster.local")


@dataclass(frozen=True)
class Names:
    """The logical names of a row's resources, as suffixes of the building component's name. State holds
    them: changing one replaces the certificate."""

    key: str
    cert: str
    csr: str = ""  # a leaf's certificate request


@dataclass(frozen=True)
class Cert(Generic[C]):
    """One row of the table: a certificate, its key and (a leaf) its CSR as pulumi-tls resources. A field
    that depends on the stack is a function of the row's source (C)."""

    common_name: Read[C, str]
    issuer: str | None  # the signing CA's row; None: self-signed, a CA
    usages: Read[C, Sequence[str]]
    validity_hours: Read[C, int]
    early_renewal_hours: Read[C, int | None]  # None: not set (the provider's default, 0)
    sans: Read[C, Sans]
    key: Read[C, KeySpec]
    subject: Read[C, Mapping[str, Any]]  # the subject's fields besides the CN
    names: Names
    # Fixed per row (ForceNew in pulumi-tls): setting it on a row that has none would replace the certificate.
    subject_key_id: bool = True
    # Pulumi's `protect` on the row's key and certificate (a resource option: no input, no URN changes).
    protect: Read[C, bool] = False
    # Pulumi's `replacement_trigger` on the certificate only (its key and CSR stay, so the files on a master
    # never pair a new key with an old certificate): a new value replaces the certificate. None: no trigger
    # is registered at all, so a stack that never sets one keeps its state as it was.
    renew_trigger: Read[C, str | None] = None


def _read(value: Any, source: Any) -> Any:
    return value(source) if callable(value) else value


def cert_sans(settings: Settings) -> Sans:
    """The proxy client's SANs: every master's address + pki.hosts, IPs normalised, names lowercased,
    each once."""
    ips: list[str] = []
    dns: list[str] = []
    for value in [m.address for m in settings.masters] + list(settings.pki.hosts):
        if config.address_kind(value) == "ip":
            text = str(ipaddress.ip_address(value))
            if text not in ips:
                ips.append(text)
        elif value.lower() not in dns:
            dns.append(value.lower())
    return Sans(tuple(ips), tuple(dns))


def _subject(settings: Settings) -> dict[str, Any]:
    """pki.subject: the front-proxy pair's subject fields (only the CN differs)."""
    s = settings.pki.subject
    return {**s.model_dump(), "street_addresses": list(s.street_addresses) or None}


def _key(settings: Settings) -> KeySpec:
    """pki.keyAlgorithm with pki.rsaBits or pki.ecdsaCurve: the front-proxy pair's keys."""
    pki = settings.pki
    if pki.key_algorithm is KeyAlgorithm.RSA:
        return KeySpec("RSA", rsa_bits=pki.rsa_bits)
    return KeySpec("ECDSA", ecdsa_curve=pki.ecdsa_curve)


AGGREGATOR_CA = "aggregator-ca"
PROXY_CLIENT = contract.PROXY_CLIENT_CERT_NAME  # the policy pack finds the cert by this name
SERVING_CA = "metrics-server-serving-ca"
SERVING = "metrics-server-serving"
# metrics-server's serving pair is not configurable: it lasts as long as a default stack's front-proxy pair.
_DEFAULT = Pki()
_SERVING_KEY = KeySpec("ECDSA", ecdsa_curve="P256")

TABLE: dict[str, Cert[Any]] = {
    # The aggregation CA (kubeadm: front-proxy-ca). Masters: <certDir>/aggregator-ca.pem
    # (--requestheader-client-ca-file). Its key stays in Pulumi state. Not built with pki.existingCa.
    AGGREGATOR_CA: Cert[Settings](
        common_name=lambda s: s.pki.ca_common_name,
        issuer=None,
        usages=("cert_signing", "key_encipherment", "digital_signature"),
        validity_hours=lambda s: s.pki.ca_validity_hours,
        early_renewal_hours=0,  # never renewed by accident: a new CA must be a planned rotation
        sans=Sans(),
        key=_key,
        subject=_subject,
        names=Names(key="-key", cert=""),
        # Replacing the CA means a rotation (every master, the proxy cert, extension apiservers): never as the
        # side effect of a config edit, and `destroy` keeps it, unless the stack says pki.protectCa: false.
        protect=lambda s: s.pki.protect_ca,
    ),
    # The proxy client (kubeadm: front-proxy-client), which kube-apiserver presents to extension
    # apiservers. Masters: <certDir>/aggregator.pem and aggregator-key.pem (--proxy-client-cert-file,
    # --proxy-client-key-file); its CN is --requestheader-allowed-names.
    PROXY_CLIENT: Cert[Settings](
        common_name=lambda s: s.pki.proxy_client_common_name,
        issuer=AGGREGATOR_CA,
        usages=lambda s: s.pki.proxy_client_allowed_uses,
        validity_hours=lambda s: s.pki.cert_validity_hours,
        early_renewal_hours=lambda s: s.pki.early_renewal_hours,
        sans=cert_sans,
        key=_key,
        subject=_subject,
        names=Names(key="-key", csr="", cert=""),
        renew_trigger=lambda s: s.pki.renew_now,
    ),
    # metrics-server's serving CA. Cluster: the caBundle of the APIService v1beta1.metrics.k8s.io (with it
    # kube-apiserver verifies metrics-server) and ca.crt of the Secret metrics-server-serving-cert.
    SERVING_CA: Cert[Service](
        common_name=SERVING_CA,
        issuer=None,
        usages=("cert_signing", "crl_signing", "digital_signature"),
        validity_hours=_DEFAULT.ca_validity_hours,
        early_renewal_hours=None,  # unset since it was first made: an explicit 0 would change its inputs
        sans=Sans(),
        key=_SERVING_KEY,
        subject={"organization": contract.NAMESPACE},
        names=Names(key="-serving-ca-key", cert="-serving-ca"),
    ),
    # metrics-server's serving certificate, for its Service's names. Cluster: tls.crt and tls.key of the
    # Secret metrics-server-serving-cert (--tls-cert-file, --tls-private-key-file).
    SERVING: Cert[Service](
        common_name=lambda svc: f"{svc.name}.{svc.namespace}.svc",
        issuer=SERVING_CA,
        usages=("server_auth", "digital_signature", "key_encipherment"),
        validity_hours=_DEFAULT.cert_validity_hours,
        early_renewal_hours=_DEFAULT.early_renewal_hours,
        sans=lambda svc: Sans(dns=svc.dns_names),
        key=_SERVING_KEY,
        subject={},
        names=Names(key="-serving-key", csr="-serving-csr", cert="-serving-cert"),
        subject_key_id=False,
    ),
}


def requestheader_allowed_names(settings: Settings) -> list[str]:
    """--requestheader-allowed-names: the proxy client's CN, and nothing else."""
    return [_read(TABLE[PROXY_CLIENT].common_name, settings)]


@dataclass(frozen=True)
class Issued:
    """A built row (or, for aggregator-ca, pki.existingCa in its place): what its certificate goes out as."""

    row: str
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]  # a secret in the engine's state (pulumi-tls marks it)
    not_after: pulumi.Output[str]  # RFC 3339


def issue(
    row: str,
    source: Any,
    name: str,
    parent: pulumi.Resource,
    *,
    issuer: Issued | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
) -> Issued:
    """Build TABLE[row], read from `source`, as children of `parent` named after `name` (its key, and a
    self-signed certificate or a CSR and a certificate signed by `issuer`, the built row it names)."""
    cert: Cert[Any] = TABLE[row]
    if (issuer.row if issuer else None) != cert.issuer:
        raise ValueError(f"{row} is signed by {cert.issuer or 'itself'}, not {issuer.row if issuer else 'itself'}")

    protect = bool(_read(cert.protect, source))

    def opts(*, protected: bool = False, trigger: str | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on) or None, protect=protected or None,
                                      replacement_trigger=trigger)

    spec: KeySpec = _read(cert.key, source)
    key = tls.PrivateKey(name + cert.names.key, algorithm=spec.algorithm, rsa_bits=spec.rsa_bits,
                         ecdsa_curve=spec.ecdsa_curve, opts=opts(protected=protect))
    subject = {"common_name": _read(cert.common_name, source), **_read(cert.subject, source)}
    common = dict(
        allowed_uses=list(_read(cert.usages, source)),
        validity_period_hours=_read(cert.validity_hours, source),
        early_renewal_hours=_read(cert.early_renewal_hours, source),
        set_subject_key_id=cert.subject_key_id or None,
        # the certificate; a leaf's CSR below is never protected
        opts=opts(protected=protect, trigger=_read(cert.renew_trigger, source)),
    )
    if issuer is None:
        signed: tls.SelfSignedCert | tls.LocallySignedCert = tls.SelfSignedCert(
            name + cert.names.cert,
            private_key_pem=key.private_key_pem,
            is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(**subject),
            **common,
        )
    else:
        sans: Sans = _read(cert.sans, source)
        csr = tls.CertRequest(
            name + cert.names.csr,
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(**subject),
            ip_addresses=list(sans.ips) or None,
            dns_names=list(sans.dns) or None,
            opts=opts(),
        )
        signed = tls.LocallySignedCert(
            name + cert.names.cert,
            cert_request_pem=csr.cert_request_pem,
            ca_cert_pem=issuer.cert_pem,
            ca_private_key_pem=issuer.key_pem,
            **common,
        )
    return Issued(row, signed.cert_pem, key.private_key_pem, signed.validity_end_time)


class AggregatorCA(pulumi.ComponentResource):
    """The CA named by --requestheader-client-ca-file (file: aggregator-ca.pem): TABLE's aggregator-ca, or
    the existing CA of pki.existingCa (then the component has no children)."""

    issued: Issued
    cert_pem: pulumi.Output[str]  # what the masters get as aggregator-ca.pem
    not_after: pulumi.Output[str]  # RFC 3339

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__(contract.AGGREGATOR_CA_TYPE, name, None, opts)
        existing = settings.pki.existing_ca
        self.issued = _kept(existing) if existing is not None else issue(AGGREGATOR_CA, settings, name, self)
        self.cert_pem = self.issued.cert_pem
        self.not_after = self.issued.not_after
        self.register_outputs({"certPem": self.cert_pem, "validityEndTime": self.not_after})


def _kept(existing: ExistingCa) -> Issued:
    # Validated at config load (key matches, a CA, valid, not the cluster CA); the key is a secret from
    # here on, in whatever form it was given re-encoded as PKCS#8 (see ExistingCa.signing_key_pem).
    return Issued(
        row=AGGREGATOR_CA,
        cert_pem=pulumi.Output.from_input(existing.cert_pem or ""),
        key_pem=pulumi.Output.secret(existing.signing_key_pem()),
        not_after=pulumi.Output.from_input(existing.not_after()),
    )


class ProxyClientCert(pulumi.ComponentResource):
    """TABLE's proxy-client: the client certificate kube-apiserver presents to extension apiservers
    (files: aggregator.pem, aggregator-key.pem; flags --proxy-client-cert-file/--proxy-client-key-file)."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]  # secret
    not_after: pulumi.Output[str]  # RFC 3339

    def __init__(self, name: str, settings: Settings, ca: AggregatorCA | Issued,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("metrics-aggregation:pki:ProxyClientCert", name, None, opts)
        # an Issued: the signing CA as a CA rotation lets it through (components/ca_rotation.py)
        issued = issue(PROXY_CLIENT, settings, name, self, issuer=ca if isinstance(ca, Issued) else ca.issued)
        self.cert_pem = issued.cert_pem
        self.private_key_pem = issued.key_pem
        self.not_after = issued.not_after
        self.register_outputs({"certPem": self.cert_pem, "notAfter": self.not_after})
