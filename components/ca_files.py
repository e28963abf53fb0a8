"""Reading and checking CA files and PEM texts: the one copy, shared by the stack config and the policy pack.

The stack config reads metricsServer.kubeletCaCertFile, pki.clusterCaCertFile and pki.existingCa.certFile /
keyFile with it; the policy pack (policy/, its own process) reads pki.clusterCaCertFile with it too. So this
module imports the standard library and `cryptography` only (the pack has no Pulumi program SDK objects to
give it), and says what is wrong in a short form (`CaFileFault.text`) that each reader completes with its
own fix: the config with the key's `CaFileKind`, the pack with its policy config hint.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from components.contract import CA_CERT_FILE

# How large a CA file (metricsServer.kubeletCaCertFile, pki.clusterCaCertFile) may be: a CA bundle is a
# few KiB, and the kubelet CA goes into a ConfigMap.
MAX_CA_FILE_BYTES = 256 * 1024

FileReader = Callable[[Path], bytes]


def read_local_file(path: Path) -> bytes:
    """The default FileReader: the file's bytes (at most MAX_CA_FILE_BYTES + 1 of them)."""
    with open(path, "rb") as f:
        return f.read(MAX_CA_FILE_BYTES + 1)


@dataclass(frozen=True)
class CaFileKind:
    """What a CA file key holds (`*CaCertFile`, pki.existingCa.keyFile), for the fix texts of `explain`."""

    # "create it with <what>, or fix the path"
    what: str
    # why a private key must not be in the file: "holds a private key (<path>); <why>: point it at ..."
    # (unused when holds_key)
    private_key_why: str = ""
    # "is set together with <pem key>; choose one: remove <pem key> to read <noun> from the file, ..."
    noun: str = "the CA"
    # The file is a private key (PEM text, checked by the config's ExistingCa), not certificates.
    holds_key: bool = False

    @property
    def file_noun(self) -> str:
        return "the CA's private key file" if self.holds_key else "the CA certificate file"


KUBELET_CA_FILE = CaFileKind(
    what="the PEM CA certificate that signed the kubelets' serving certificates",
    private_key_why="the file's contents go into a ConfigMap",
)
CLUSTER_CA_FILE = CaFileKind(
    what="the cluster CA certificate, kube-apiserver's --client-ca-file, e.g. /etc/kubernetes/pki/ca.crt",
    private_key_why="only the certificate is needed to compare the CAs, and the cluster CA's key must stay on the masters",
)
EXISTING_CA_CERT_FILE = CaFileKind(
    what="the existing aggregator CA certificate, e.g. a copy of /etc/kubernetes/pki/front-proxy-ca.crt (kubeadm) "
    f"or of the masters' {CA_CERT_FILE}",
    private_key_why=f"the file goes to every master as {CA_CERT_FILE}; give the key in pki.existingCa.keyFile",
    noun="the CA certificate",
)
EXISTING_CA_KEY_FILE = CaFileKind(
    what="the existing aggregator CA's private key, e.g. a copy of /etc/kubernetes/pki/front-proxy-ca.key "
    "(kubeadm) or cfssl's aggregator-ca-key.pem",
    noun="the CA's private key",
    holds_key=True,
)

FaultReason = Literal["missing", "directory", "unreadable", "too_large", "private_key", "not_certificate", "no_key"]


@dataclass(frozen=True)
class CaFileFault:
    """Why a CA file is not usable: `reason`, and `text`, what is wrong without a fix
    ("cannot be read: /x/ca.crt does not exist")."""

    reason: FaultReason
    text: str


def locate(path: str, base: Path, base_noun: str) -> tuple[Path, str]:
    """(the file to read, how messages name it): `path` with ~ expanded, a relative one under `base`, which
    messages name as "<full> (relative to <base_noun> <base>)"."""
    full = Path(path).expanduser()
    if full.is_absolute():
        return full, f"{full}"
    full = base / full
    return full, f"{full} (relative to {base_noun} {base})"


def read_ca_file(full: Path, where: str, *, holds_key: bool = False,
                 read: FileReader = read_local_file) -> tuple[str | None, CaFileFault | None]:
    """(the PEM text, None) or (None, the fault) of a CA file: readable, at most MAX_CA_FILE_BYTES, and
    certificates only (`holds_key`: a PEM private key, only checked for its key block here; the config
    parses it and never shows it)."""
    try:
        data = read(full)
    except FileNotFoundError:
        return None, CaFileFault("missing", f"cannot be read: {where} does not exist")
    except IsADirectoryError:
        return None, CaFileFault("directory", f"cannot be read: {where} is a directory")
    except OSError as e:
        return None, CaFileFault("unreadable", f"cannot be read: {where}: {e.strerror or e}")
    if len(data) > MAX_CA_FILE_BYTES:
        return None, CaFileFault("too_large", f"is larger than {MAX_CA_FILE_BYTES // 1024} KiB ({where})")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if holds_key:
        if "PRIVATE KEY-----" not in text:
            return None, CaFileFault("no_key", f"holds no PEM private key ({where})")
        return text, None
    if "PRIVATE KEY-----" in text:
        return None, CaFileFault("private_key", f"holds a private key ({where})")
    if not pem_certificates(text):
        return None, CaFileFault("not_certificate", f"is not a PEM certificate ({where})")
    return text, None


def explain(fault: CaFileFault, kind: CaFileKind) -> str:
    """The config's message for `fault` of a file key of `kind`: what is wrong, then how to fix it."""
    fix = {
        "missing": f"; create it with {kind.what}, or fix the path",
        "directory": f"; point it at {kind.file_noun}",
        "unreadable": "; make it readable by the user running pulumi, or fix the path",
        "too_large": f"; point it at {kind.file_noun} only",
        "private_key": f"; {kind.private_key_why}: point it at the CA certificate only (-----BEGIN CERTIFICATE-----)",
        "not_certificate": ": it needs one or more -----BEGIN CERTIFICATE----- blocks (convert a DER file with "
        "`openssl x509 -inform der -in ca.der -out ca.pem`)",
        "no_key": f"; point it at {kind.what} (a DER key converts with "
        "`openssl pkey -inform der -in ca.der -out ca-key.pem`)",
    }[fault.reason]
    return fault.text + fix


# --- certificates and keys (cryptography) ------------------------------------------------------------


def pem_certificates(text: str) -> list[Any]:
    """Every certificate of a PEM text (x509.Certificate); [] when it holds none or one is not readable."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        return []


def certificate(text: str) -> Any:
    """The first certificate of a PEM text; ValueError when there is none."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(text.encode())


def spki(public_key: Any) -> bytes:
    """A public key as DER SubjectPublicKeyInfo: two certificates with the same key compare equal."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)
# A certificate text that can go to the masters unchanged: one block, nothing around it.
_ONE_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----(\r?\n)?")
_STRONG_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
ENCRYPTED_KEY = (
    "is an encrypted private key, and the program cannot ask for its passphrase: decrypt it "
    "(`openssl pkey -in ca-key.pem -out ca-key.plain.pem`) and give the decrypted key (as secret config "
    "with keyPem it stays encrypted in the stack)"
)


def existing_ca_certificate(text: str) -> tuple[Any, str | None]:
    """(the one certificate of pki.existingCa.certPem/certFile, None) or (None, what is wrong)."""
    if "PRIVATE KEY-----" in text:
        return None, (
            f"holds a private key; the certificate goes to every master as {CA_CERT_FILE}: give only the CA "
            "certificate here, and its key in pki.existingCa.keyPem (secret) or pki.existingCa.keyFile"
        )
    certs = pem_certificates(text)
    if not certs:
        return None, (
            "is not a PEM certificate: give the CA certificate (-----BEGIN CERTIFICATE-----; convert a DER "
            "file with `openssl x509 -inform der -in ca.der -out ca.pem`)"
        )
    if len(certs) > 1:
        return None, (
            f"holds {len(certs)} certificates; give only the CA certificate whose private key is in "
            f"pki.existingCa.keyPem/keyFile (it goes to every master as {CA_CERT_FILE})"
        )
    return certs[0], None


def not_a_usable_ca(cert: Any, now: dt.datetime) -> list[str]:
    """What keeps `cert` from signing the proxy-client certificate now. Go's x509 verification (kube-apiserver's
    requestheader authenticator, metrics-server) refuses a signer without basicConstraints CA:TRUE or, when
    it has a key usage, without keyCertSign, and any certificate outside its validity period."""
    from cryptography import x509

    out: list[str] = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        out.append(
            "is not a CA certificate (basicConstraints CA:TRUE is missing), so kube-apiserver would refuse "
            "what it signs: give the CA certificate (kubeadm: front-proxy-ca.crt; the classic guide: "
            f"{CA_CERT_FILE}), not a leaf such as the proxy-client certificate"
        )
    try:
        key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None and not key_usage.key_cert_sign:
        out.append(
            "has a key usage without keyCertSign, so kube-apiserver would refuse what it signs: give a CA "
            "certificate with keyCertSign, or remove pki.existingCa to let the program create a CA"
        )
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now >= not_after:
        out.append(
            f"expired on {when(not_after)} ({span(now - not_after)} ago): renew the CA certificate (with the "
            "same key, certificates it signed stay valid), or remove pki.existingCa to let the program create a CA"
        )
    elif now < not_before:
        out.append(f"is not valid before {when(not_before)}; check this machine's clock, or wait until then")
    return out


def existing_ca_key(text: str) -> tuple[Any, str | None]:
    """(the private key of pki.existingCa.keyPem/keyFile, None) or (None, what is wrong). PKCS#1 (RSA PRIVATE
    KEY), SEC1 (EC PRIVATE KEY, also after an EC PARAMETERS block) and PKCS#8 (PRIVATE KEY) are read; no
    message quotes the key or cryptography's own error text."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    blocks = [m for m in _PEM_BLOCK.finditer(text) if m.group(1).endswith("PRIVATE KEY")]
    if any(m.group(1) == "ENCRYPTED PRIVATE KEY" for m in blocks) or "Proc-Type: 4,ENCRYPTED" in text:
        return None, ENCRYPTED_KEY
    if not blocks:
        return None, (
            "holds no PEM private key (-----BEGIN RSA PRIVATE KEY-----, EC PRIVATE KEY or PRIVATE KEY): give the "
            "CA's private key (kubeadm: front-proxy-ca.key; the classic guide: aggregator-ca-key.pem)"
        )
    if len(blocks) > 1:
        return None, f"holds {len(blocks)} private keys; give only the CA's own key"
    try:
        key = serialization.load_pem_private_key(blocks[0].group(0).encode(), password=None)
    except TypeError:
        return None, ENCRYPTED_KEY
    except (ValueError, UnsupportedAlgorithm):
        return None, (
            f"is not a readable {blocks[0].group(1)} (PKCS#1, SEC1 and PKCS#8 PEM keys are read); check that "
            "it was copied whole"
        )
    return _key_kind_problem(key)


def _key_kind_problem(key: Any) -> tuple[Any, str | None]:
    """(key, None) for a key the tls provider signs with and strong enough, else (None, why not)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            return None, (
                f"is an RSA key of {key.key_size} bits, too weak to sign with: use a CA with a key of at least "
                "2048 bits, or remove pki.existingCa to let the program create one"
            )
        return key, None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _STRONG_CURVES:
            return None, f"is an EC key on curve {key.curve.name}; use a CA whose key is on P-256, P-384 or P-521"
        return key, None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, None
    return None, f"is a {type(key).__name__.removeprefix('_')} key; the tls provider signs with RSA, ECDSA or Ed25519 keys only"


def pem_as_written(text: str) -> str:
    """The certificate text the masters get as aggregator-ca.pem: as given when it is exactly one PEM block
    (a user's existing file then stays byte for byte; `pulumi config set` without --raw drops the final
    newline, which is put back, and CRLF line ends become LF as the host script writes them), else the
    certificate alone, re-encoded."""
    if _ONE_CERT_BLOCK.fullmatch(text):
        text = text.replace("\r\n", "\n")
        return text if text.endswith("\n") else text + "\n"
    from cryptography.hazmat.primitives import serialization

    return certificate(text).public_bytes(serialization.Encoding.PEM).decode()


def cluster_ca_match(cert: Any, cluster_pem: str | None) -> str | None:
    """'the same certificate' / 'the same key' when `cert` is a certificate of the cluster CA PEM (a bundle)."""
    if not cluster_pem:
        return None
    cluster = pem_certificates(cluster_pem)  # an unreadable bundle is reported on the cluster CA key itself
    if any(c == cert for c in cluster):
        return "the same certificate"
    if any(spki(c.public_key()) == spki(cert.public_key()) for c in cluster):
        return "the same key"
    return None


def when(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def span(d: dt.timedelta) -> str:
    """A duration in the unit a person reads it in: days, hours or minutes."""
    seconds = abs(d.total_seconds())
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} days"
    if seconds >= 2 * 3600:
        return f"{int(seconds // 3600)} hours"
    return f"{max(1, int(seconds // 60))} minutes"
