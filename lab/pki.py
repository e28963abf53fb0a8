"""A lab cluster's own certificates, as a declarative table (CA -> leaves), like kubeadm's certlist: the
sandbox's (sandbox/cluster.py) and the engine tier's control plane (apiserver.py ControlPlane).

Files (all under <cluster dir>/pki):
  ca.crt/.key                 the sandbox CLUSTER CA: apiserver serving certs and every client cert
  apiserver-<master>.crt/.key kube-apiserver serving (SANs: the master's address, 127.0.0.1, service IP)
  admin.crt/.key              the operator (O=system:masters)
  controller-manager.crt/.key kube-controller-manager (CN=system:kube-controller-manager)
  sa.key/sa.pub               the service-account signing key, shared by every apiserver
  kubelet-ca.crt/.key         the CA of the emulated kubelets' serving certs (metricsServer.kubeletCaCertFile)
  kubelet-<node>.crt/.key     each emulated kubelet's serving cert
Nothing here is the aggregator CA: that one is the Pulumi program's (pulumi-tls), separate on purpose.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Cert:
    name: str  # file stem
    ca: str  # file stem of the signing CA
    cn: str
    org: str | None = None
    server: bool = False
    client: bool = False
    ips: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


@dataclass
class Pki:
    dir: Path
    written: list[str] = field(default_factory=list)

    def path(self, stem: str, ext: str = "crt") -> Path:
        return self.dir / f"{stem}.{ext}"

    def _write_key(self, stem: str, key) -> None:
        f = self.path(stem, "key")
        f.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        os.chmod(f, 0o600)

    def _load(self, stem: str):
        cert = x509.load_pem_x509_certificate(self.path(stem).read_bytes())
        key = serialization.load_pem_private_key(self.path(stem, "key").read_bytes(), None)
        return cert, key

    def ca(self, stem: str, cn: str) -> None:
        if self.path(stem).exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self._write_key(stem, key)
        self.path(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.written.append(stem)

    def leaf(self, c: Cert) -> None:
        if self.path(c.name).exists():
            return
        ca_cert, ca_key = self._load(c.ca)
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, c.cn)]
        if c.org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, c.org))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if c.server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if c.client else [])
        now = datetime.datetime.now(datetime.UTC)
        b = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        sans = [x509.IPAddress(ipaddress.ip_address(i)) for i in c.ips] + [x509.DNSName(d) for d in c.dns]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        self._write_key(c.name, key)
        self.path(c.name).write_bytes(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        self.written.append(c.name)

    def service_account_key(self) -> None:
        if self.path("sa", "key").exists():
            return
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._write_key("sa", key)
        self.path("sa", "pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.written.append("sa")


def table(masters: dict[str, str], nodes_ip: str, node_names: list[str]) -> list[Cert]:
    """Every leaf a lab cluster needs; `masters`: name -> address."""
    certs = [
        Cert("admin", "ca", "sandbox-admin", org="system:masters", client=True),
        Cert("controller-manager", "ca", "system:kube-controller-manager", client=True),
        # what a kubelet presents to kube-apiserver: the ordinary client-cert auth the change must keep working
        Cert("kubelet-client-sandbox-node-1", "ca", "system:node:sandbox-node-1", org="system:nodes", client=True),
    ]
    for name, address in masters.items():
        certs.append(Cert(f"apiserver-{name}", "ca", "kube-apiserver", server=True,
                          ips=(address, "127.0.0.1", "10.96.0.1"),
                          dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost", name)))
    for node in node_names:
        certs.append(Cert(f"kubelet-{node}", "kubelet-ca", node, server=True, ips=(nodes_ip,), dns=(node,)))
    return certs


def ensure(dir: Path, masters: dict[str, str], nodes_ip: str, node_names: list[str]) -> Pki:
    dir.mkdir(parents=True, exist_ok=True)
    os.chmod(dir, 0o700)
    p = Pki(dir)
    p.ca("ca", "sandbox-cluster-ca")
    p.ca("kubelet-ca", "sandbox-kubelet-ca")
    p.service_account_key()
    for c in table(masters, nodes_ip, node_names):
        p.leaf(c)
    return p
