"""AggregatorCA and ProxyClientCert: the front-proxy PKI of the aggregation layer (pulumi-tls).

The profile mirrors kubeadm's front-proxy-ca / front-proxy-client (certlist.go), as a table:

    certificate      signed by       usages                                           files on each master
    aggregator CA    itself          cert_signing, key_encipherment, digital_signature  <certDir>/aggregator-ca.pem
    proxy client     aggregator CA   client_auth, key_encipherment, digital_signature   <certDir>/aggregator.pem
                                                                                        <certDir>/aggregator-key.pem

With pki.existingCa the aggregator CA is one that exists already (the classic guide's cfssl CA, kubeadm's
front-proxy-ca): no resource is registered for it, the proxy-client certificate is signed with its key
(from config, a secret Output) and the masters get its certificate as given, so extension apiservers see
no CA change.

The aggregator CA is a CA of its own, never the cluster CA: kube-apiserver checks
--requestheader-client-ca-file before --client-ca-file, so a shared CA locks out every ordinary client
certificate whose CN is not in --requestheader-allowed-names (kubelets, controllers, users).
The CA private key stays in Pulumi state (encrypted); masters only receive the CA certificate.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from components.config import CA_ALLOWED_USES, ExistingCa, KeyAlgorithm, Pki


@dataclass(frozen=True)
class KeySpec:
    algorithm: str
    rsa_bits: int | None
    ecdsa_curve: str | None

    @classmethod
    def of(cls, pki: Pki) -> KeySpec:
        if pki.key_algorithm is KeyAlgorithm.RSA:
            return cls("RSA", pki.rsa_bits, None)
        return cls("ECDSA", None, pki.ecdsa_curve)

    def private_key(self, name: str, parent: pulumi.Resource) -> tls.PrivateKey:
        return tls.PrivateKey(
            name,
            algorithm=self.algorithm,
            rsa_bits=self.rsa_bits,
            ecdsa_curve=self.ecdsa_curve,
            opts=pulumi.ResourceOptions(parent=parent),
        )


def _subject(pki: Pki, common_name: str) -> dict[str, object]:
    """The subject fields shared by the CA and the proxy-client certificate (only the CN differs)."""
    s = pki.subject
    return dict(
        common_name=common_name,
        organization=s.organization,
        organizational_unit=s.organizational_unit,
        country=s.country,
        province=s.province,
        locality=s.locality,
        street_addresses=list(s.street_addresses) or None,
        postal_code=s.postal_code,
    )


class AggregatorCA(pulumi.ComponentResource):
    """The CA named by --requestheader-client-ca-file (file: aggregator-ca.pem): a self-signed CA this
    program creates, or the existing CA of pki.existingCa (then the component has no children)."""

    cert_pem: pulumi.Output[str]  # what the masters get as aggregator-ca.pem
    private_key_pem: pulumi.Output[str]  # secret; stays in state
    key_algorithm: pulumi.Output[str]
    not_after: pulumi.Output[str]  # RFC 3339

    def __init__(self, name: str, pki: Pki, opts: pulumi.ResourceOptions | None = None):
        super().__init__("metrics-aggregation:pki:AggregatorCA", name, None, opts)
        if pki.existing_ca is not None:
            self._keep(pki.existing_ca)
        else:
            self._create(name, pki)
        self.register_outputs({"certPem": self.cert_pem, "validityEndTime": self.not_after})

    def _create(self, name: str, pki: Pki) -> None:
        key = KeySpec.of(pki).private_key(f"{name}-key", self)
        cert = tls.SelfSignedCert(
            name,
            private_key_pem=key.private_key_pem,
            is_ca_certificate=True,
            set_subject_key_id=True,
            subject=tls.SelfSignedCertSubjectArgs(**_subject(pki, pki.ca_common_name)),
            allowed_uses=list(CA_ALLOWED_USES),
            validity_period_hours=pki.ca_validity_hours,
            # A CA is never renewed early by accident: its replacement must be a planned rotation.
            early_renewal_hours=0,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.cert_pem = cert.cert_pem
        self.private_key_pem = key.private_key_pem
        self.key_algorithm = key.algorithm
        self.not_after = cert.validity_end_time

    def _keep(self, existing: ExistingCa) -> None:
        # Validated at config load (key matches, a CA, valid, not the cluster CA); the key is a secret from
        # here on, in whatever form it was given re-encoded as PKCS#8 (see ExistingCa.signing_key_pem).
        self.cert_pem = pulumi.Output.from_input(existing.cert_pem or "")
        self.private_key_pem = pulumi.Output.secret(existing.signing_key_pem())
        self.key_algorithm = pulumi.Output.from_input(existing.key_algorithm())
        self.not_after = pulumi.Output.from_input(existing.not_after())


class ProxyClientCert(pulumi.ComponentResource):
    """The client certificate kube-apiserver presents to extension apiservers
    (files: aggregator.pem, aggregator-key.pem; flags --proxy-client-cert-file/--proxy-client-key-file).
    """

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]  # secret
    not_after: pulumi.Output[str]  # RFC 3339

    def __init__(
        self,
        name: str,
        pki: Pki,
        ca: AggregatorCA,
        ip_addresses: list[str],
        dns_names: list[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("metrics-aggregation:pki:ProxyClientCert", name, None, opts)
        key = KeySpec.of(pki).private_key(f"{name}-key", self)
        csr = tls.CertRequest(
            name,
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(**_subject(pki, pki.proxy_client_common_name)),
            ip_addresses=ip_addresses or None,
            dns_names=dns_names or None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        cert = tls.LocallySignedCert(
            name,
            cert_request_pem=csr.cert_request_pem,
            ca_cert_pem=ca.cert_pem,
            ca_private_key_pem=ca.private_key_pem,
            allowed_uses=list(pki.proxy_client_allowed_uses),
            validity_period_hours=pki.cert_validity_hours,
            early_renewal_hours=pki.early_renewal_hours,
            set_subject_key_id=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.cert_pem = cert.cert_pem
        self.private_key_pem = key.private_key_pem
        self.not_after = cert.validity_end_time
        self.register_outputs({"certPem": cert.cert_pem, "notAfter": cert.validity_end_time})
