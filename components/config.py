"""The typed stack config of metrics-aggregation: the schema (models and validation).

Everything the program needs from `Pulumi.<stack>.yaml` is read here, once, into frozen pydantic
models. An invalid stack stops the program before any resource is registered, with one line per
problem that names the key path, the bad value and the fix (the wording: components/errors.py; CA
files are read by components/ca_files.py, which the policy pack shares). What the components derive
from these settings (flags, paths on the masters, certificate SANs) lives with the component that uses it.

Key names are the contract of docs/contracts.md ("Stack config"): they are camelCase in YAML and
snake_case attributes here (pydantic aliases).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components import ca_files, errors, ssh_agent
from components.ca_files import (
    CLUSTER_CA_FILE,
    EXISTING_CA_CERT_FILE,
    EXISTING_CA_KEY_FILE,
    KUBELET_CA_FILE,
    CaFileKind,
    FileReader,
)
from components.contract import MANAGED_FLAGS, NAMESPACE
from components.errors import ConfigError, ProblemItem, Problems, problem, unsafe_value_message

TOP_LEVEL_KEYS = ("masters", "ssh", "pki", "apiserver", "metricsServer")

# What the tls provider understands in `allowed_uses` (terraform-provider-tls `x509KeyUsages` and
# `x509ExtKeyUsages`). The provider ignores any other string with a warning, which is how a proxy
# certificate silently loses client_auth (metrics-server#1279).
TLS_ALLOWED_USES = frozenset(
    {
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "cert_signing", "crl_signing", "encipher_only", "decipher_only",
        "any_extended", "server_auth", "client_auth", "code_signing", "email_protection",
        "ipsec_end_system", "ipsec_tunnel", "ipsec_user", "timestamping", "ocsp_signing",
        "microsoft_server_gated_crypto", "netscape_server_gated_crypto",
        "microsoft_commercial_code_signing", "microsoft_kernel_code_signing",
    }
)
PROXY_CLIENT_ALLOWED_USES = ("client_auth", "key_encipherment", "digital_signature")

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
# Master names become part of Pulumi resource names (`<name>-certs`, `<name>-flags`).
_MASTER_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_HOURS_PER_YEAR = 8760

_FLAG_NAME = re.compile(r"^--[a-z0-9]+(-[a-z0-9]+)*$")

# --- the value grammar (issue 11) ---
# Every value this program puts into a master's kube-apiserver config, generated (the proxy-client CN in
# --requestheader-allowed-names, the certDir paths of --requestheader-client-ca-file and --proxy-client-*)
# or given (apiserver.extraFlags, masters[].extraFlags), and every other value it hands the host script as
# an option (configPath, readyzUrl, keyOwner, the master's name), is ONE word of these characters. The
# host script edits the config file token by token (whitespace-separated words inside a quoted env
# variable, an ExecStart= line, a YAML list item): a space, TAB or CR splits a value into a second flag,
# and quotes, '$', '`', '%', '\', ';', '#' or '!' would be interpreted by the shell (an env file that is
# sourced), systemd (% specifiers, quotes) or YAML (' #' comments). The host script checks the same
# grammar again (a second line of defence), with the same pattern: VALUE_PATTERN is a POSIX ERE as well as
# a Python regex; match it against the WHOLE value, in the C locale (bash: `LC_ALL=C; [[ $v =~ ^[...]+$ ]]`),
# since ranges such as A-Z take in other letters in other locales.
VALUE_CHARS = "A-Za-z0-9_.,:/=@+*~-"
VALUE_PATTERN = f"^[{VALUE_CHARS}]+$"
# fullmatch, not match: Python's '$' also matches before a final newline ("2\n" would pass).
_VALUE = re.compile(f"[{VALUE_CHARS}]+")


def is_safe_value(text: Any) -> bool:
    """Whether `text` is one word of the value grammar (VALUE_PATTERN)."""
    return isinstance(text, str) and text.isascii() and _VALUE.fullmatch(text) is not None


# apiserver.keyOwner: `user:group` of the proxy-client key, each a lowercase name ([a-z_][a-z0-9_-]*, at most
# 32 characters) or a numeric id (at most 4294967294: chown reads 4294967295 as -1, "unchanged"); a subset of
# the value grammar. The host script re-checks KEY_OWNER_PATTERN (POSIX ERE, C locale) the same way (check_option_values).
_OWNER_PART = "([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})"
KEY_OWNER_PATTERN = f"^{_OWNER_PART}:{_OWNER_PART}$"
_KEY_OWNER = re.compile(f"{_OWNER_PART}:{_OWNER_PART}")
_MAX_ID = 4294967294
# apiserver.containerName: a Kubernetes container name (RFC 1123 label), a subset of the value grammar
_CONTAINER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )


def address_kind(value: str) -> Literal["ip", "dns"] | None:
    """'ip' for an IPv4/IPv6 literal, 'dns' for a valid DNS name, None for neither."""
    try:
        ipaddress.ip_address(value)
        return "ip"
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    # An all-numeric dotted string (10.0.0.300) is a broken IP address, not a host name.
    if all(label.isdigit() for label in labels):
        return None
    return "dns" if all(_DNS_LABEL.match(label) for label in labels) else None


def _is_loopback(host: str) -> bool:
    """localhost, or an IP address of the loopback range."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(value: str) -> str:
    if address_kind(value) is None:
        raise ValueError(errors.NOT_AN_ADDRESS)
    return value


Address = Annotated[str, Field(min_length=1), AfterValidator(_check_address)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Layout(str, Enum):
    """How kube-apiserver gets its flags on a master."""

    ENV_FILE = "env-file"  # KUBE_APISERVER_OPTS="--a=b \ ..." read by the unit's EnvironmentFile
    SYSTEMD_UNIT = "systemd-unit"  # flags on ExecStart= with backslash continuations
    STATIC_POD = "static-pod"  # kubeadm manifest: the container's command list


# The pinned host key types that work with pulumi-command. With a pinned key it offers exactly that key's type
# as HostKeyAlgorithms (pulumi-command provider/pkg/provider/remote/connection.go, SSHConfig), and
# golang.org/x/crypto takes the type from the key's base64 blob, ignoring the line's first word (ssh/keys.go
# ParseAuthorizedKey): an RSA key is always `ssh-rsa`, SHA-1 signatures, which OpenSSH 8.8 and later refuse
# by default ("no common algorithm for host key"), and a blob typed rsa-sha2-256/512 is no key at all
# (ssh/keys.go parsePubKey). So no RSA pin can work: it is refused, naming the host (Master, Bastion).
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
_RSA_KEY_WORDS = frozenset({"ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"})


def host_key_blob_type(v: str) -> str | None:
    """The key type inside a host key line's base64 blob, the type x/crypto uses; None when there is none."""
    parts = v.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):  # binascii.Error is a ValueError
        return None
    size = int.from_bytes(blob[:4], "big")
    name = blob[4:4 + size]
    return name.decode("ascii", "replace") if len(blob) >= 4 and len(name) == size else None


def is_rsa_host_key(v: str) -> bool:
    """An RSA key, by the line's first word or by its blob (which is what pulumi-command goes by)."""
    words = v.split()
    return bool(words) and (words[0] in _RSA_KEY_WORDS or host_key_blob_type(v) == "ssh-rsa")


def _check_host_key(v: str) -> str:
    """One line of `ssh-keyscan` without the host name: a key of HOST_KEY_TYPES whose blob is a key of the type
    its first word names. An RSA key passes here: Master and Bastion refuse it with the host's name."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    if is_rsa_host_key(v):
        return v
    words = v.split()
    if not words or words[0] not in HOST_KEY_TYPES or host_key_blob_type(v) != words[0]:
        raise ValueError(errors.NOT_A_HOST_KEY)
    try:
        load_ssh_public_key(" ".join(words[:2]).encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(errors.NOT_A_HOST_KEY) from None
    return v


HostKey = Annotated[str, AfterValidator(_check_host_key)]


def _check_ca_file_path(v: str) -> str:
    """The field check of a CA file key (`*CaCertFile`, pki.existingCa.certFile/keyFile): a usable path (the
    file itself is read by _read_ca_file, once the whole section is validated)."""
    if not v.strip() or any(c in v for c in "\n\0"):
        raise ValueError(errors.NOT_A_CA_FILE_PATH)
    return v


CaFilePath = Annotated[str, AfterValidator(_check_ca_file_path)]


class Master(_Model):
    name: str
    address: Address
    host_key: HostKey | None = None
    port: Port | None = None
    user: str | None = None
    layout: Layout | None = None
    config_path: str | None = None
    extra_flags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _MASTER_NAME.match(v):
            raise ValueError(errors.BAD_MASTER_NAME)
        return v

    @field_validator("config_path")
    @classmethod
    def _config_path(cls, v: str | None) -> str | None:
        return v if v is None else _absolute_path(v)

    @field_validator("extra_flags", mode="before")
    @classmethod
    def _extra_flags(cls, v: Any) -> Any:
        return _check_extra_flags(v)

    @model_validator(mode="after")
    def _host_key_type(self) -> Master:
        _refuse_rsa_host_key(self.host_key, f"master {self.name}", self.address, self.port)
        return self


def _refuse_rsa_host_key(host_key: str | None, host: str, address: str, port: int | None) -> None:
    """A pinned RSA host key fails every step upstream (HOST_KEY_TYPES): refuse it at its hostKey key."""
    if host_key and is_rsa_host_key(host_key):
        raise problem(("hostKey",), host_key, errors.rsa_host_key(host, address, port))


def _check_extra_flags(v: Any) -> dict[str, str]:
    """apiserver.extraFlags / masters[].extraFlags: {--name: value} -> the same with string values.

    YAML gives numbers and booleans for unquoted values: whole numbers and true/false become the text
    kube-apiserver expects ('800', 'true'); anything else must be a string."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise problem((), v, errors.EXTRA_FLAGS_NOT_A_MAPPING)
    problems: list[ProblemItem] = []
    out: dict[str, str] = {}
    for name, value in v.items():
        if not isinstance(name, str) or not _FLAG_NAME.match(name):
            problems.append(((), name, _bad_flag_name(name)))
            continue
        if name in MANAGED_FLAGS:
            problems.append(((), name, errors.managed_flag(name)))
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            problems.append(
                (
                    (name,),
                    value,
                    errors.FRACTION_FLAG_VALUE if math.isfinite(value) else errors.NOT_A_FLAG_VALUE,
                )
            )
            continue
        elif isinstance(value, str):
            text = value
        elif value is None:
            problems.append(((name,), None, "has no value (null); give the flag a value, or remove it"))
            continue
        else:
            problems.append(((name,), value, "must be a string (or a whole number, true or false)"))
            continue
        if not is_safe_value(text):
            problems.append(((name,), text, unsafe_value_message("a flag value")))
            continue
        out[name] = text
    if problems:
        raise Problems(problems)
    return out


def _bad_flag_name(name: Any) -> str:
    return errors.bad_flag_name(name, _FLAG_NAME)


def _absolute_path(v: str) -> str:
    """A path on the master (configPath, certDir): absolute, no '..' step, one word of the value grammar."""
    if not v.startswith("/") or "/../" in v + "/":
        raise ValueError("must be an absolute path without '..' steps, e.g. /etc/kubernetes/ssl")
    return _one_word(v, "a path on the master")


def _one_word(v: str, what: str, example: str = "") -> str:
    """`v` when it is one word of the value grammar, else the grammar's message for `what` (+ `example`)."""
    if not is_safe_value(v):
        raise ValueError(unsafe_value_message(what) + example)
    return v


class Bastion(_Model):
    host: Address
    port: Port = 22
    user: str | None = None  # default: ssh.user
    private_key: str | None = None  # default: ssh.privateKey (set with --secret)
    host_key: HostKey | None = None

    @model_validator(mode="after")
    def _host_key_type(self) -> Bastion:
        _refuse_rsa_host_key(self.host_key, f"the bastion {self.host}", self.host, self.port)
        return self


class Ssh(_Model):
    user: str = "root"
    port: Port = 22
    private_key: str | None = None
    private_key_password: str | None = None
    agent_socket_path: str | None = None
    sudo: bool = False
    bastion: Bastion | None = None
    # Without a pinned host key pulumi-command checks nothing: the proxy-client key (on stdin) goes to whoever
    # answers on the master's address. A stack that really has no way to pin them says so here.
    insecure_skip_host_key_check: bool = False
    dial_error_limit: Annotated[int, Field(ge=1, le=100)] = 10
    per_dial_timeout: Annotated[int, Field(ge=1, le=600)] = 15

    @field_validator("agent_socket_path")
    @classmethod
    def _agent_socket_path(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(errors.AGENT_SOCKET_PATH_BLANK)
        return v

    @model_validator(mode="after")
    def _auth(self) -> Ssh:
        if not self.private_key and not self.agent_socket_path:
            raise problem(("privateKey",), None, errors.SSH_KEY_MISSING)
        if self.private_key and "PRIVATE KEY-----" not in self.private_key:
            raise problem(("privateKey",), "<secret>", errors.SSH_KEY_NOT_PEM)
        return self


class Subject(_Model):
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None
    province: str | None = None
    locality: str | None = None
    street_addresses: tuple[str, ...] = ()
    postal_code: str | None = None


class KeyAlgorithm(str, Enum):
    RSA = "RSA"
    ECDSA = "ECDSA"


class ExistingCa(_Model):
    """pki.existingCa: an aggregator/front-proxy CA that exists already (a cfssl CA like the classic guide's,
    kubeadm's front-proxy-ca). The proxy-client certificate is then signed by it, and its certificate is
    what the masters get as aggregator-ca.pem, so extension apiservers see no CA change.

    Each of certificate and key comes from secret config (certPem, keyPem) or from a file on the machine
    running pulumi (certFile, keyFile, read like pki.clusterCaCertFile); after validation cert_pem and
    key_pem hold the texts, the certificate is one CA certificate that is valid now and the key is its own,
    unencrypted. The key is a SecretStr: no repr or error shows it."""

    cert_pem: str | None = None
    key_pem: SecretStr | None = None
    cert_file: CaFilePath | None = None
    key_file: CaFilePath | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, v: Any) -> Any:
        # pydantic's own messages show the value they refused: the key must not reach them.
        if not isinstance(v, Mapping):
            raise problem((), f"<{type(v).__name__}>", errors.EXISTING_CA_NOT_A_MAPPING)
        known = {"certPem", "keyPem", "certFile", "keyFile", "cert_pem", "key_pem", "cert_file", "key_file"}
        problems = [((k,), "<secret>", errors.EXISTING_CA_UNKNOWN_KEY) for k in v if k not in known]
        for k in ("keyPem", "key_pem"):
            if k in v and v[k] is not None and not isinstance(v[k], str):
                problems.append(((k,), "<secret>", "must be the PEM text of the CA's private key (a string)"))
        if problems:
            raise Problems(problems)
        return v

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ExistingCa:
        context = info.context or {}
        problems: list[ProblemItem] = []
        cert_text = _existing_ca_source(self.cert_pem, self.cert_file, "certPem", "certFile", EXISTING_CA_CERT_FILE,
                                        context, problems)
        key_text = _existing_ca_source(self.key_pem.get_secret_value() if self.key_pem else None, self.key_file,
                                       "keyPem", "keyFile", EXISTING_CA_KEY_FILE, context, problems)
        if problems or cert_text is None or key_text is None:
            raise Problems(problems)
        cert = self._check_cert(cert_text, problems)
        key = self._check_key(key_text, problems)
        if cert is not None and key is not None and ca_files.spki(key.public_key()) != ca_files.spki(cert.public_key()):
            problems.append(((self.key_source,), self._key_shown,
                             errors.existing_ca_key_mismatch(self.cert_source, cert.subject.rfc4514_string())))
        if problems:
            raise Problems(problems)
        return self.model_copy(update={"cert_pem": ca_files.pem_as_written(cert_text), "key_pem": SecretStr(key_text)})

    @property
    def cert_source(self) -> str:
        """The key the certificate came from: certFile or certPem."""
        return "certFile" if self.cert_file is not None else "certPem"

    @property
    def key_source(self) -> str:
        return "keyFile" if self.key_file is not None else "keyPem"

    def cert_shown(self, text: str | None = None) -> str:
        """What a problem with the certificate shows as the value: the path, the subject, or the text's start
        (never any of a private key pasted there)."""
        if self.cert_file is not None:
            return self.cert_file
        text = text or self.cert_pem or ""
        try:
            return ca_files.certificate(text).subject.rfc4514_string()
        except ValueError:
            return "<secret>" if "PRIVATE KEY" in text else text[:40]

    @property
    def _key_shown(self) -> str:
        return self.key_file if self.key_file is not None else "<secret>"

    def _check_cert(self, text: str, problems: list[ProblemItem]) -> Any:
        cert, wrong = ca_files.existing_ca_certificate(text)
        found = [wrong] if wrong is not None else ca_files.not_a_usable_ca(cert, dt.datetime.now(dt.UTC))
        problems.extend(((self.cert_source,), self.cert_shown(text), p) for p in found)
        return None if found else cert

    def _check_key(self, text: str, problems: list[ProblemItem]) -> Any:
        key, wrong = ca_files.existing_ca_key(text)
        if wrong is not None:
            problems.append(((self.key_source,), self._key_shown, wrong))
        return key

    # --- what pki.AggregatorCA needs (valid only after validation) ---

    def certificate(self) -> Any:
        """The CA certificate (cryptography x509.Certificate)."""
        return ca_files.certificate(self.cert_pem or "")

    def signing_key_pem(self) -> str:
        """The CA key as unencrypted PKCS#8 PEM, whatever form it was given in (PKCS#1, SEC1, PKCS#8; other
        PEM blocks such as EC PARAMETERS dropped): the tls provider reads only a file's first PEM block, and
        a re-encoded but unchanged key must not replace the proxy-client certificate (caPrivateKeyPem
        forces a new one)."""
        from cryptography.hazmat.primitives import serialization

        key, wrong = ca_files.existing_ca_key(self.key_pem.get_secret_value() if self.key_pem else "")
        if wrong is not None:
            raise ValueError("pki.existingCa was not validated")  # never with the key in the message
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    def key_algorithm(self) -> str:
        """RSA, ECDSA or ED25519: the tls provider's name of the CA key's algorithm."""
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        public = self.certificate().public_key()
        if isinstance(public, rsa.RSAPublicKey):
            return "RSA"
        return "ECDSA" if isinstance(public, ec.EllipticCurvePublicKey) else "ED25519"

    def not_after(self) -> str:
        """The CA certificate's notAfter, RFC 3339 in UTC, whole seconds (the tls provider's validity_end_time
        is RFC 3339 too, in its local zone with nanoseconds: readers take both, components/rfc3339.py)."""
        return self.certificate().not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


class CaRotation(str, Enum):
    """pki.caRotation: the stage of a rotation to pki.caGeneration that an `up` carries out (absent: done,
    the previous generation's CA gone). docs/ca-rotation.md."""

    TRUST = "trust"  # the new CA is made; every master trusts both CAs
    SIGN = "sign"  # the proxy-client certificate is re-signed by the new CA; both still trusted


class Pki(_Model):
    ca_common_name: str = "aggregator-ca"
    proxy_client_common_name: str = "aggregator"
    subject: Subject = Subject()
    hosts: tuple[str, ...] = ()
    key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA
    rsa_bits: int = 2048
    ecdsa_curve: Literal["P256", "P384", "P521"] = "P256"
    ca_validity_hours: Annotated[int, Field(gt=0)] = 10 * _HOURS_PER_YEAR
    cert_validity_hours: Annotated[int, Field(gt=0)] = _HOURS_PER_YEAR
    early_renewal_hours: Annotated[int, Field(ge=0)] = 720
    proxy_client_allowed_uses: tuple[str, ...] = PROXY_CLIENT_ALLOWED_USES
    # The cluster CA (optional): lets the policy pack prove the aggregator CA is a different one.
    cluster_ca_cert_pem: str | None = None
    # A file on the machine running pulumi (relative: to the project directory), read at config load; the
    # validated settings then carry its text in cluster_ca_cert_pem, as if that key had been set.
    cluster_ca_cert_file: CaFilePath | None = None
    # An existing aggregator/front-proxy CA to sign the proxy-client certificate with (instead of creating
    # one); caCommonName and caValidityHours then do not apply.
    existing_ca: ExistingCa | None = None
    # The created CA's key and certificate carry Pulumi's `protect`: a change that would replace the CA
    # (every master's requestheader CA, a re-signed proxy cert, extension apiservers to re-trust) fails its
    # preview and `up`, and `destroy` cannot delete them; false lifts that (docs/operations.md).
    protect_ca: bool = True
    # The generation of the CA this program creates (1: the first); a rotation to N+1 runs in stages, one
    # `up` each, named by ca_rotation (docs/ca-rotation.md).
    ca_generation: Annotated[int, Field(ge=1)] = 1
    ca_rotation: CaRotation | None = None

    # A date, a counter: each change of it replaces the proxy-client certificate on the next `up` (Pulumi's
    # replacement trigger, components/pki.py; the key is kept). The engine compares it with the value in
    # state, so the first value is only recorded. Text, so that 7 and "7" are one value.
    renew_now: str | None = None

    @field_validator("renew_now", mode="before")
    @classmethod
    def _renew_now(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and v.strip()) or (isinstance(v, int) and not isinstance(v, bool)):
            return None if v is None else str(v)
        raise ValueError(errors.RENEW_NOW_NOT_TEXT)

    @field_validator("ca_common_name")
    @classmethod
    def _ca_cn(cls, v: str) -> str:
        # only in the CA certificate, never on a master
        if not v.strip() or "," in v:
            raise ValueError("must be a non-empty common name without commas")
        return v

    @field_validator("proxy_client_common_name")
    @classmethod
    def _proxy_cn(cls, v: str) -> str:
        # the value of --requestheader-allowed-names on every master: a comma would make it two names
        if "," in v:
            raise ValueError("must be one common name without commas (--requestheader-allowed-names is a "
                             "comma-separated list), e.g. aggregator")
        return _one_word(v, "the common name that becomes --requestheader-allowed-names", ", e.g. aggregator")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [(i, h) for i, h in enumerate(v) if address_kind(h) is None]
        if bad:
            raise Problems(
                [
                    ((i,), h, "is neither an IP address nor a DNS name; SANs must be one or the other")
                    for i, h in bad
                ]
            )
        return v

    @field_validator("ecdsa_curve", mode="before")
    @classmethod
    def _curve(cls, v: Any) -> Any:
        # Accept the spelling of the policy docs (P-256) as well as the provider's (P256).
        return v.replace("-", "") if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> Pki:
        problems: list[ProblemItem] = []
        # The rules of the CA this program creates. An existing CA may share the proxy certificate's DN (the
        # classic guide's cfssl CA and proxy cert are both CN=aggregator): Go's x509 verification then still
        # finds the CA by name and checks the signature with its key (the cert just carries no
        # authorityKeyIdentifier), so kube-apiserver and metrics-server accept it.
        if self.existing_ca is None and self.ca_common_name == self.proxy_client_common_name:
            problems.append(
                (
                    ("caCommonName",),
                    self.ca_common_name,
                    errors.CA_CN_EQUALS_PROXY_CN,
                )
            )
        if self.key_algorithm is KeyAlgorithm.RSA and self.rsa_bits < 2048:
            problems.append(
                (("rsaBits",), self.rsa_bits, "is below 2048; use 2048, 3072 or 4096")
            )
        if self.key_algorithm is KeyAlgorithm.RSA and self.rsa_bits > 8192:
            problems.append((("rsaBits",), self.rsa_bits, "is above 8192; use 2048, 3072 or 4096"))
        if self.existing_ca is None and self.cert_validity_hours > self.ca_validity_hours:
            problems.append(
                (
                    ("certValidityHours",),
                    self.cert_validity_hours,
                    errors.leaf_outlives_ca(self.ca_validity_hours),
                )
            )
        if self.early_renewal_hours >= self.cert_validity_hours:
            problems.append(
                (
                    ("earlyRenewalHours",),
                    self.early_renewal_hours,
                    errors.renewal_not_below_validity(self.cert_validity_hours),
                )
            )
        for i, use in enumerate(self.proxy_client_allowed_uses):
            if use not in TLS_ALLOWED_USES:
                problems.append(
                    (
                        ("proxyClientAllowedUses", i),
                        use,
                        errors.unknown_usage(TLS_ALLOWED_USES),
                    )
                )
        if "client_auth" not in self.proxy_client_allowed_uses:
            problems.append(
                (
                    ("proxyClientAllowedUses",),
                    list(self.proxy_client_allowed_uses),
                    errors.NO_CLIENT_AUTH,
                )
            )
        if self.cluster_ca_cert_pem is not None and "BEGIN CERTIFICATE" not in self.cluster_ca_cert_pem:
            problems.append(
                (("clusterCaCertPem",), self.cluster_ca_cert_pem[:40], "is not a PEM certificate")
            )
        from_file = _ca_pem_or_file(self.cluster_ca_cert_pem, self.cluster_ca_cert_file, "clusterCaCertPem",
                                    "clusterCaCertFile", info.context or {}, CLUSTER_CA_FILE, problems)
        if self.existing_ca is not None:
            problems.extend(_existing_ca_in_pki(self, from_file or self.cluster_ca_cert_pem, dt.datetime.now(dt.UTC)))
        problems.extend(self._rotation_problems())
        if problems:
            raise Problems(problems)
        if from_file is not None:
            return self.model_copy(update={"cluster_ca_cert_pem": from_file})
        return self


    def _rotation_problems(self) -> list[ProblemItem]:
        problems: list[ProblemItem] = []
        if self.ca_rotation is not None and self.ca_generation < 2:
            problems.append((("caRotation",), self.ca_rotation.value, errors.ROTATION_WITHOUT_GENERATION))
        if self.existing_ca is not None and (self.ca_generation != 1 or self.ca_rotation is not None):
            key = "caRotation" if self.ca_rotation is not None else "caGeneration"
            value = self.ca_rotation.value if self.ca_rotation is not None else self.ca_generation
            problems.append(((key,), value, errors.ROTATION_WITH_EXISTING_CA))
        return problems


class Apiserver(_Model):
    # false: the apiservers already run aggregation (kubeadm's front-proxy, a hand-made setup); no certs
    # or flags steps, only a read-only check on every master that the flags are there.
    manage: bool = True
    layout: Layout = Layout.ENV_FILE
    config_path: str | None = None
    cert_dir: str | None = None
    restart_command: str | None = None
    readyz_url: str = "https://127.0.0.1:6443/readyz"
    ready_timeout_seconds: int = 120
    # How long /readyz must answer nothing but 200 (after the restart was seen) for a master to count as
    # ready; None: the host script's default (3 s).
    ready_steady_seconds: int | None = None
    enable_aggregator_routing: bool = True
    # Extra kube-apiserver flags on every master (masters[].extraFlags are merged over them).
    extra_flags: dict[str, str] = Field(default_factory=dict)
    # user:group of the proxy-client key on the masters (None: root:root), for apiservers run as User=kube.
    key_owner: str | None = None
    # static-pod: the name of the kube-apiserver container in the manifest (None: the host script's
    # default, kube-apiserver); initContainers and other containers are never edited.
    container_name: str | None = None

    @field_validator("container_name")
    @classmethod
    def _container_name(cls, v: str | None) -> str | None:
        if v is not None and not _CONTAINER_NAME.fullmatch(v):
            raise ValueError(errors.BAD_CONTAINER_NAME)
        return v

    @field_validator("key_owner")
    @classmethod
    def _key_owner(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _KEY_OWNER.fullmatch(v) or any(p.isdigit() and int(p) > _MAX_ID for p in v.split(":")):
            raise ValueError(errors.BAD_KEY_OWNER)
        return v

    @field_validator("extra_flags", mode="before")
    @classmethod
    def _extra_flags(cls, v: Any) -> Any:
        return _check_extra_flags(v)

    @field_validator("config_path", "cert_dir")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return v if v is None else _absolute_path(v)

    @field_validator("readyz_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/]", v):
            raise ValueError("must be an http(s) URL such as https://127.0.0.1:6443/readyz")
        return _one_word(v, "the readyz URL the host script polls",
                         "; e.g. https://127.0.0.1:6443/readyz (IPv6: https://localhost:6443/readyz)")

    @field_validator("ready_timeout_seconds")
    @classmethod
    def _timeout(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be a positive number of seconds (e.g. 120)")
        if v > 3600:
            raise ValueError("must be at most 3600 seconds; a longer wait blocks the rollout")
        return v

    @field_validator("ready_steady_seconds")
    @classmethod
    def _steady(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 300:
            raise ValueError("must be 1..300 seconds (e.g. 3): how long /readyz must answer only 200 after a restart")
        return v

    @field_validator("restart_command")
    @classmethod
    def _restart(cls, v: str | None) -> str | None:
        if v is not None and "\n" in v:
            raise ValueError("must be a single line")
        return v


METRIC_RESOLUTION_FLOOR_SECONDS = 10  # metrics-server's default --kubelet-request-timeout
REQUEST_TIMEOUT_ARG = "--kubelet-request-timeout"

# --- metricsServer: scheduling, image, resources, pod metadata and extra args (issue 14) ---------------
# The syntax Kubernetes checks (apimachinery validation), checked here so that a typo stops the program
# before anything is applied instead of failing the Deployment's apply halfway through an `up`.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# resource.Quantity without a sign: a decimal number and a binary-SI, decimal-SI or exponent suffix
_QUANTITY = re.compile(r"(?P<num>\d+(\.\d*)?|\.\d+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")
_QUANTITY_SCALE = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal("1e3"),
    "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
    **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")},
}
# Go's time.ParseDuration, without a sign (a negative timeout is not one)
_GO_DURATION = re.compile(r"((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS = {"ns": Decimal("1e-9"), "us": Decimal("1e-6"), "µs": Decimal("1e-6"), "μs": Decimal("1e-6"),
                    "ms": Decimal("1e-3"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
# metricsServer.extraArgs keys: metrics-server's long flags, and klog's -v (pflag takes a one-letter Go flag
# as its shorthand)
_ARG_NAME = re.compile(r"--[a-z0-9]+(-[a-z0-9]+)*|-v")
_SAME_ARG = {"-v": "--v", "--v": "-v"}

# What the program puts on the pod template itself (components.metrics_server.labels and its checksum
# annotations): podLabels / podAnnotations may not replace them (k8s-app is the selector).
OWN_POD_LABELS = (
    "k8s-app", "app.kubernetes.io/name", "app.kubernetes.io/version", "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
OWN_POD_ANNOTATION_PREFIX = "checksum/"
# metricsServer.hostNetwork: true with tolerations unset: such pods usually run on the control-plane nodes
# (where the apiservers reach the node network directly), which kubeadm taints NoSchedule.
CONTROL_PLANE_TOLERATION = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                            "effect": "NoSchedule"}
DEFAULT_NODE_SELECTOR = {"kubernetes.io/os": "linux"}
DEFAULT_PRIORITY_CLASS = "system-cluster-critical"
# metricsServer.nodeCount sizes the requests: 100m/200Mi suffice up to 100 nodes, plus 1m CPU and 2MiB per
# node above that (docs/config.md)
BASE_NODES = 100
BASE_CPU_M, BASE_MEMORY_MI = 100, 200
PER_NODE_CPU_M, PER_NODE_MEMORY_MI = 1, 2


def sized_requests(node_count: int) -> dict[str, str]:
    """The cpu/memory requests metricsServer.nodeCount gives (the default when resources.requests is unset)."""
    extra = max(0, node_count - BASE_NODES)
    return {
        "cpu": f"{BASE_CPU_M + PER_NODE_CPU_M * extra}m",
        "memory": f"{BASE_MEMORY_MI + PER_NODE_MEMORY_MI * extra}Mi",
    }


def is_dns_subdomain(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 253 and _DNS_SUBDOMAIN.fullmatch(v) is not None


def is_qualified_name(v: Any) -> bool:
    """A label or annotation key: [DNS subdomain/]name."""
    if not isinstance(v, str):
        return False
    prefix, slash, name = v.rpartition("/")
    if slash and not is_dns_subdomain(prefix):
        return False
    return len(name) <= 63 and _NAME_PART.fullmatch(name) is not None


def is_label_value(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 63 and (v == "" or _NAME_PART.fullmatch(v) is not None)


def quantity_value(text: str) -> Decimal:
    """The number a (validated) Kubernetes quantity stands for: '100m' -> 0.1, '1Ki' -> 1024."""
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise ValueError(errors.NOT_A_QUANTITY)
    suffix = m["suffix"] or ""
    scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _QUANTITY_SCALE[suffix]
    return Decimal(m["num"]) * scale


def go_duration_seconds(text: str) -> Decimal | None:
    """Seconds of a Go duration ('5s', '1m30s', '500ms'); None when `text` is not one."""
    if text == "0":
        return Decimal(0)
    if not _GO_DURATION.fullmatch(text):
        return None
    return sum((Decimal(n) * _GO_UNIT_SECONDS[u] for n, u in _GO_DURATION_PART.findall(text)), Decimal(0))


def _resolution_seconds(v: str) -> int:
    m = re.fullmatch(r"(\d+)(s|m)", v)
    return int(m[1]) * (60 if m[2] == "m" else 1) if m else 0


def _string_map(v: Any, example: str, key_ok: Callable[[Any], bool], key_message: str,
                value_ok: Callable[[Any], bool] | None = None) -> dict[str, str]:
    """A map of strings (nodeSelector, podLabels, podAnnotations): every key and value checked, one problem each."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise problem((), v, errors.not_a_string_map(example))
    problems: list[ProblemItem] = []
    for key, value in v.items():
        if not key_ok(key):
            problems.append(((str(key),), key, key_message))
        elif not isinstance(value, str):
            problems.append(((key,), value, errors.MAP_VALUE_NOT_TEXT))
        elif value_ok is not None and not value_ok(value):
            problems.append(((key,), value, errors.NOT_A_LABEL_VALUE))
    if problems:
        raise Problems(problems)
    return dict(v)


def _check_extra_args(v: Any) -> dict[str, str | None]:
    """metricsServer.extraArgs: {--flag: value} -> {--flag: text, or None for the flag alone}.

    YAML numbers become their text; true and null stand for the flag alone, false for `--flag=false`. The
    values are container args (no shell, no config file in between): anything on one line goes."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise problem((), v, errors.EXTRA_ARGS_NOT_A_MAPPING)
    problems: list[ProblemItem] = []
    out: dict[str, str | None] = {}
    for name, value in v.items():
        if not isinstance(name, str) or not _ARG_NAME.fullmatch(name):
            problems.append(((), name, errors.BAD_ARG_NAME))
            continue
        if name in errors.METRICS_SERVER_OWN_ARGS:
            problems.append(((name,), value, errors.own_arg(name)))
            continue
        if _SAME_ARG.get(name) in out:
            problems.append(((name,), value, errors.same_arg(_SAME_ARG[name])))
            continue
        if value is None or value is True:
            out[name] = None
        elif value is False:
            out[name] = "false"
        elif isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
            out[name] = str(value)
        elif not isinstance(value, str):
            problems.append(((name,), value, errors.ARG_VALUE_TYPE))
        elif any(ord(c) < 32 or ord(c) == 127 for c in value):
            problems.append(((name,), value, errors.ARG_VALUE_NOT_ONE_LINE))
        else:
            out[name] = value
    if problems:
        raise Problems(problems)
    return out


class Toleration(_Model):
    """A Kubernetes Toleration, as in a manifest."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None  # Kubernetes' default: Equal
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        problems: list[ProblemItem] = []
        if self.key and not is_qualified_name(self.key):
            problems.append((("key",), self.key, errors.NOT_A_LABEL_KEY))
        if not self.key and self.operator != "Exists":
            problems.append((("operator",), self.operator, errors.TOLERATION_EMPTY_KEY))
        if self.operator == "Exists" and self.value:
            problems.append((("value",), self.value, errors.TOLERATION_EXISTS_WITH_VALUE))
        elif self.value is not None and not is_label_value(self.value):
            problems.append((("value",), self.value, errors.NOT_A_LABEL_VALUE))
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            problems.append((("tolerationSeconds",), self.toleration_seconds,
                             errors.TOLERATION_SECONDS_WITHOUT_NO_EXECUTE))
        if problems:
            raise Problems(problems)
        return self


class Affinity(_Model):
    """A Kubernetes Affinity; each part passed to the pod spec as given (camelCase, as in a manifest)."""

    node_affinity: dict[str, Any] | None = None
    pod_affinity: dict[str, Any] | None = None
    pod_anti_affinity: dict[str, Any] | None = None


class TopologySpreadConstraint(_Model):
    """A Kubernetes TopologySpreadConstraint; passed to the pod spec as given."""

    max_skew: Annotated[int, Field(ge=1)]
    topology_key: Annotated[str, Field(min_length=1)]
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: dict[str, Any] | None = None
    min_domains: Annotated[int, Field(ge=1)] | None = None
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    node_taints_policy: Literal["Honor", "Ignore"] | None = None
    match_label_keys: tuple[str, ...] | None = None


class ResourceList(_Model):
    """Quantities of one side of resources (requests or limits)."""

    cpu: str | None = None
    memory: str | None = None
    ephemeral_storage: str | None = Field(
        default=None, validation_alias="ephemeral-storage", serialization_alias="ephemeral-storage"
    )

    @field_validator("cpu", "memory", "ephemeral_storage", mode="before")
    @classmethod
    def _quantity(cls, v: Any) -> Any:
        # YAML gives `cpu: 1` and `cpu: 0.5` as numbers: they are quantities too
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if isinstance(v, str):
            quantity_value(v)  # raises the problem of a bad quantity
        return v

    def given(self) -> dict[str, str]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Resources(_Model):
    requests: ResourceList | None = None
    limits: ResourceList | None = None


def _int_or_percent(v: Any) -> Any:
    """A PodDisruptionBudget field: a whole number >= 0 or 'N%' with N 0..100."""
    if v is None:
        return v
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and (m := re.fullmatch(r"(\d{1,3})%", v)) and int(m[1]) <= 100:
        return v
    raise ValueError(errors.NOT_INT_OR_PERCENT)


def _scaled(value: int | str, replicas: int) -> int:
    """Pods a budget value stands for; percentages round up, as the disruption controller does."""
    if isinstance(value, int):
        return value
    return math.ceil(int(value[:-1]) * replicas / 100)


class PodDisruptionBudget(_Model):
    min_available: int | str | None = None
    max_unavailable: int | str | None = None

    @field_validator("min_available", "max_unavailable", mode="before")
    @classmethod
    def _value(cls, v: Any) -> Any:
        return _int_or_percent(v)

    @model_validator(mode="after")
    def _one(self) -> PodDisruptionBudget:
        if self.min_available is None and self.max_unavailable is None:
            raise problem((), None, errors.PDB_NEEDS_ONE)
        if self.min_available is not None and self.max_unavailable is not None:
            raise problem(("maxUnavailable",), self.max_unavailable, errors.PDB_BOTH)
        return self

    def field(self) -> tuple[str, int | str]:
        """(its one field as Kubernetes names it, the value)."""
        if self.min_available is not None:
            return "minAvailable", self.min_available
        return "maxUnavailable", self.max_unavailable  # type: ignore[return-value]

    def disruptions_allowed(self, replicas: int) -> tuple[int, int]:
        """(pods it lets go at once, pods it keeps) with `replicas` pods, all healthy."""
        if self.min_available is not None:
            keeps = min(replicas, _scaled(self.min_available, replicas))
            return replicas - keeps, keeps
        gone = min(replicas, _scaled(self.max_unavailable, replicas))  # type: ignore[arg-type]
        return gone, replicas - gone


def _default_tolerations(data: Mapping[str, Any]) -> tuple[Toleration, ...]:
    return (Toleration.model_validate(CONTROL_PLANE_TOLERATION),) if data.get("host_network") else ()


class MetricsServer(_Model):
    # false: keep a metrics-server this program did not make (a Helm release); nothing is deployed then.
    manage: bool = True
    version: str = "v0.8.1"
    image: str = "registry.k8s.io/metrics-server/metrics-server"
    namespace: str = "kube-system"
    replicas: Annotated[int, Field(ge=1, le=10)] = 1
    kubelet_insecure_tls: bool = False
    kubelet_ca_cert_pem: str | None = None
    # A file on the machine running pulumi (relative: to the project directory), read at config load; the
    # validated settings then carry its text in kubelet_ca_cert_pem, as if that key had been set.
    kubelet_ca_cert_file: CaFilePath | None = None
    preferred_address_types: tuple[
        Literal["Hostname", "InternalDNS", "InternalIP", "ExternalDNS", "ExternalIP"], ...
    ] = ("InternalIP", "ExternalIP", "Hostname")
    host_network: bool = False
    container_port: Port = 10250
    metric_resolution: str = "15s"
    node_count: Annotated[int, Field(ge=0)] = 0
    wait_for_available: bool = True
    # A control plane without kubelets (the local sandbox) never runs the pods; a stack says so here,
    # explicitly, and the program then skips the Deployment's and the Service's awaits (never the
    # APIService's).
    expect_no_pods: bool = False
    # Scheduling, image, resources, pod metadata and extra args (issue 14; docs/config.md). Each default
    # renders the objects exactly as before these keys existed.
    # unset (or null): none, or CONTROL_PLANE_TOLERATION with hostNetwork (a field above this one, so its
    # validated value is known to _tolerations); never None once validated
    tolerations: tuple[Toleration, ...] | None = Field(default=None, validate_default=True)
    node_selector: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NODE_SELECTOR))
    affinity: Affinity | None = None  # None: the automatic anti-affinity (replicas > 1)
    topology_spread_constraints: tuple[TopologySpreadConstraint, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    image_digest: str | None = None
    resources: Resources | None = None  # requests default to sized_requests(nodeCount); no limits
    priority_class_name: str = DEFAULT_PRIORITY_CLASS
    pod_disruption_budget: PodDisruptionBudget | None = None  # None: minAvailable 1 when replicas > 1
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    pod_labels: dict[str, str] = Field(default_factory=dict)
    extra_args: dict[str, str | None] = Field(default_factory=dict)

    @field_validator("tolerations", mode="before")
    @classmethod
    def _tolerations(cls, v: Any, info: ValidationInfo) -> Any:
        return _default_tolerations(info.data) if v is None else v

    @field_validator("node_selector", mode="before")
    @classmethod
    def _node_selector(cls, v: Any) -> Any:
        return _string_map(v, "{kubernetes.io/os: linux}", is_qualified_name, errors.NOT_A_LABEL_KEY, is_label_value)

    @field_validator("pod_labels", mode="before")
    @classmethod
    def _pod_labels(cls, v: Any) -> Any:
        labels = _string_map(v, "{team: platform}", is_qualified_name, errors.NOT_A_LABEL_KEY, is_label_value)
        owned = [((k,), labels[k], errors.owned_pod_label(OWN_POD_LABELS)) for k in labels if k in OWN_POD_LABELS]
        if owned:
            raise Problems(owned)
        return labels

    @field_validator("pod_annotations", mode="before")
    @classmethod
    def _pod_annotations(cls, v: Any) -> Any:
        annotations = _string_map(v, "{example.com/owner: platform}", is_qualified_name, errors.NOT_AN_ANNOTATION_KEY)
        owned = [((k,), annotations[k], errors.owned_pod_annotation(OWN_POD_ANNOTATION_PREFIX))
                 for k in annotations if k.startswith(OWN_POD_ANNOTATION_PREFIX)]
        if owned:
            raise Problems(owned)
        return annotations

    @field_validator("extra_args", mode="before")
    @classmethod
    def _extra_args(cls, v: Any) -> Any:
        return _check_extra_args(v)

    @field_validator("image_pull_secrets")
    @classmethod
    def _pull_secrets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        problems: list[ProblemItem] = []
        for i, name in enumerate(v):
            if not is_dns_subdomain(name):
                problems.append(((i,), name, errors.NOT_A_DNS_SUBDOMAIN))
            elif name in v[:i]:
                problems.append(((i,), name, errors.DUPLICATE_PULL_SECRET))
        if problems:
            raise Problems(problems)
        return v

    @field_validator("image_digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not _IMAGE_DIGEST.fullmatch(v):
            raise ValueError(errors.NOT_AN_IMAGE_DIGEST)
        return v

    @field_validator("priority_class_name")
    @classmethod
    def _priority_class(cls, v: str) -> str:
        if not is_dns_subdomain(v):
            raise ValueError(errors.NOT_A_DNS_SUBDOMAIN)
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.match(r"^v\d+\.\d+\.\d+$", v):
            raise ValueError("must be a release tag such as v0.8.1")
        return v

    @field_validator("metric_resolution")
    @classmethod
    def _resolution(cls, v: str) -> str:
        # metrics-server refuses to start (it panics) unless --metric-resolution is LONGER than
        # --kubelet-request-timeout, whose default is 10s: 10s itself crash-loops the pods.
        # (how much longer: _request_timeout_problems, which knows extraArgs)
        if not re.fullmatch(r"\d+(s|m)", v):
            raise ValueError(errors.resolution_too_short(METRIC_RESOLUTION_FLOOR_SECONDS))
        return v

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> MetricsServer:
        problems: list[ProblemItem] = []
        from_file = _ca_pem_or_file(self.kubelet_ca_cert_pem, self.kubelet_ca_cert_file, "kubeletCaCertPem",
                                    "kubeletCaCertFile", info.context or {}, KUBELET_CA_FILE, problems)
        if self.kubelet_ca_cert_file is not None:
            if self.kubelet_insecure_tls:
                problems.append(
                    (
                        ("kubeletInsecureTls",),
                        True,
                        errors.INSECURE_TLS_WITH_CA_FILE,
                    )
                )
        if self.kubelet_insecure_tls and self.kubelet_ca_cert_pem:
            problems.append(
                (
                    ("kubeletInsecureTls",),
                    True,
                    errors.INSECURE_TLS_WITH_CA_PEM,
                )
            )
        if self.kubelet_ca_cert_pem is not None and "BEGIN CERTIFICATE" not in self.kubelet_ca_cert_pem:
            problems.append(
                (("kubeletCaCertPem",), self.kubelet_ca_cert_pem[:40], "is not a PEM certificate")
            )
        if self.host_network and self.container_port == 10250:
            problems.append(
                (
                    ("containerPort",),
                    10250,
                    errors.PORT_COLLIDES_WITH_KUBELET,
                )
            )
        problems.extend(self._request_timeout_problems())
        problems.extend(self._resources_problems())
        problems.extend(self._budget_problems())
        if problems:
            raise Problems(problems)
        if from_file is not None:
            return self.model_copy(update={"kubelet_ca_cert_pem": from_file})
        return self

    def _request_timeout_problems(self) -> list[ProblemItem]:
        """metrics-server exits at start unless --metric-resolution is longer than --kubelet-request-timeout
        (its default: 10s)."""
        resolution = _resolution_seconds(self.metric_resolution)
        if REQUEST_TIMEOUT_ARG not in self.extra_args:
            if resolution <= METRIC_RESOLUTION_FLOOR_SECONDS:
                return [(("metricResolution",), self.metric_resolution,
                         errors.resolution_too_short(METRIC_RESOLUTION_FLOOR_SECONDS))]
            return []
        where = ("extraArgs", REQUEST_TIMEOUT_ARG)
        given = self.extra_args[REQUEST_TIMEOUT_ARG]
        timeout = go_duration_seconds(given) if given is not None else None
        if timeout is None:
            return [(where, given, errors.NOT_A_GO_DURATION)]
        if timeout >= resolution:
            return [(where, given, errors.request_timeout_too_long(self.metric_resolution))]
        return []

    def _resources_problems(self) -> list[ProblemItem]:
        """Requests given and sized at once, and a limit below the request the pod would get (the API refuses it)."""
        if self.resources is None:
            return []
        problems: list[ProblemItem] = []
        given = self.resources.requests.given() if self.resources.requests else {}
        if given and self.node_count > 0:
            problems.append((("resources", "requests"), given, errors.requests_with_node_count(self.node_count)))
        sized = sized_requests(self.node_count)
        limits = self.resources.limits.given() if self.resources.limits else {}
        for name, limit in limits.items():
            request = given.get(name, sized.get(name))
            if request is None or quantity_value(limit) >= quantity_value(request):
                continue
            source = "resources.requests" if name in given else f"sized from nodeCount {self.node_count}"
            problems.append((("resources", "limits", name), limit, errors.limit_below_request(name, request, source)))
        return problems

    def _budget_problems(self) -> list[ProblemItem]:
        if self.pod_disruption_budget is None:
            return []
        field, value = self.pod_disruption_budget.field()
        allowed, keeps = self.pod_disruption_budget.disruptions_allowed(self.replicas)
        if allowed > 0:
            return []
        return [(("podDisruptionBudget", field), value, errors.pdb_blocks_drains(self.replicas, keeps))]



def _ca_pem_or_file(pem: str | None, path: str | None, pem_key: str, file_key: str, context: Mapping[str, Any],
                    kind: CaFileKind, problems: list[ProblemItem]) -> str | None:
    """The rule of each "CA as PEM text or as a file" key pair: the file's PEM text when only the file key
    is set and it is usable; otherwise None, with what is wrong appended to `problems`."""
    if path is None:
        return None
    if pem is not None:
        problems.append(((file_key,), path, errors.pem_and_file(pem_key, file_key, kind.noun)))
        return None
    text, problem = _read_ca_file(path, context, kind)
    if problem:
        problems.append(((file_key,), path, problem))
    return text


def _read_ca_file(path: str, context: Mapping[str, Any], kind: CaFileKind) -> tuple[str | None, str | None]:
    """(the PEM text, None) or (None, what is wrong and how to fix it) for a CA file key
    (metricsServer.kubeletCaCertFile, pki.clusterCaCertFile, pki.existingCa.certFile/keyFile; `kind` words
    the fixes and says whether the file holds certificates or a private key).

    Reads through context["read_file"] (default: the local disk); a relative path is resolved against
    context["base_dir"] (default: the working directory, which `pulumi` sets to the project directory).
    A private key file is only checked for a PEM key block here: ExistingCa parses it (and never shows it)."""
    full, where = ca_files.locate(path, Path(context.get("base_dir") or Path.cwd()), "the project directory")
    text, fault = ca_files.read_ca_file(full, where, holds_key=kind.holds_key,
                                        read=context.get("read_file") or ca_files.read_local_file)
    return (None, ca_files.explain(fault, kind)) if fault else (text, None)


def _existing_ca_source(pem: str | None, path: str | None, pem_key: str, file_key: str, kind: CaFileKind,
                        context: Mapping[str, Any], problems: list[ProblemItem]) -> str | None:
    """The text of one item of pki.existingCa (certificate or key): exactly one of its PEM and file keys."""
    if pem is None and path is None:
        problems.append(((pem_key,), None, errors.EXISTING_CA_MISSING[pem_key]))
        return None
    return pem if path is None else _ca_pem_or_file(pem, path, pem_key, file_key, context, kind, problems)


def _existing_ca_in_pki(pki: Pki, cluster_pem: str | None, now: dt.datetime) -> list[ProblemItem]:
    """The checks of pki.existingCa that need the rest of pki: it is not the cluster CA, and it outlives
    a proxy-client certificate issued now (pki.certValidityHours)."""
    ca = pki.existing_ca
    assert ca is not None
    cert = ca.certificate()
    where = ("existingCa", ca.cert_source)
    out: list[ProblemItem] = []
    cluster = ca_files.cluster_ca_match(cert, cluster_pem)
    if cluster is not None:
        source = "clusterCaCertFile" if pki.cluster_ca_cert_file is not None else "clusterCaCertPem"
        out.append((where, ca.cert_shown(), errors.existing_ca_is_cluster_ca(cluster, source)))
    proxy_end = now + dt.timedelta(hours=pki.cert_validity_hours)
    not_after = cert.not_valid_after_utc
    if now < not_after < proxy_end:
        hours = int((not_after - now).total_seconds() // 3600)
        fix = "renew the CA"
        if hours >= 1:
            also = " (and pki.earlyRenewalHours below that)" if hours <= pki.early_renewal_hours else ""
            fix = f"lower pki.certValidityHours to at most {hours}{also}, or renew the CA"
        out.append((where, ca.cert_shown(), errors.existing_ca_expires_first(not_after, proxy_end, pki.cert_validity_hours, fix)))
    return out


class Settings(_Model):
    """The whole validated stack config."""

    masters: tuple[Master, ...]
    ssh: Ssh
    pki: Pki = Pki()
    apiserver: Apiserver = Apiserver()
    metrics_server: MetricsServer = MetricsServer()

    @field_validator("masters")
    @classmethod
    def _masters(cls, v: tuple[Master, ...]) -> tuple[Master, ...]:
        if not v:
            raise ValueError("is empty; list at least one master (name and address)")
        problems: list[ProblemItem] = []
        for field in ("name", "address"):
            counts = Counter(getattr(m, field).lower() for m in v)
            for i, m in enumerate(v):
                value = getattr(m, field)
                if counts[value.lower()] > 1:
                    first = next(j for j, o in enumerate(v) if getattr(o, field).lower() == value.lower())
                    if first != i:
                        problems.append(
                            (
                                (i, field),
                                value,
                                f"duplicates masters[{first}].{field}; every master needs its own {field}",
                            )
                        )
        if problems:
            raise Problems(problems)
        return v

    # --- derived values that validation needs, or that another change moves (the certificate's) ---

    def master_layout(self, m: Master) -> Layout:
        return m.layout or self.apiserver.layout

    def _unmanaged_problems(self) -> list[ProblemItem]:
        """With apiserver.manage: false this program writes nothing on the masters, so a setting that
        only says what to write there would be silently ignored: name it instead."""
        why = errors.UNMANAGED_SETTING
        problems: list[ProblemItem] = []
        if self.apiserver.extra_flags:
            problems.append((("apiserver", "extraFlags"), dict(self.apiserver.extra_flags), why))
        for i, m in enumerate(self.masters):
            if m.extra_flags:
                problems.append((("masters", i, "extraFlags"), dict(m.extra_flags), why))
        if self.apiserver.key_owner:
            problems.append((("apiserver", "keyOwner"), self.apiserver.key_owner, errors.UNMANAGED_KEY_OWNER))
        return problems

    def _readyz_problems(self) -> list[ProblemItem]:
        """readyzUrl must reach the apiserver of the master being rolled, not a load balancer or another
        master that answers 200 while this one is down: a loopback address, localhost, or (one master)
        that master's own address. And the steady run must fit in the ready timeout."""
        problems: list[ProblemItem] = []
        a = self.apiserver
        host = (urlsplit(a.readyz_url).hostname or "").lower()
        for m in self.masters:
            if _is_loopback(host) or host == m.address.lower().rstrip("."):
                continue
            problems.append((("apiserver", "readyzUrl"), a.readyz_url, errors.readyz_not_local(host, m.name, m.address)))
            break
        if a.ready_steady_seconds is not None and a.ready_steady_seconds >= a.ready_timeout_seconds:
            problems.append((("apiserver", "readySteadySeconds"), a.ready_steady_seconds,
                             f"must be less than apiserver.readyTimeoutSeconds ({a.ready_timeout_seconds})"))
        return problems

    def unpinned_hosts(self) -> list[str]:
        """The SSH hosts (masters' names, 'bastion <host>') whose host key the stack does not pin."""
        out = [m.name for m in self.masters if not m.host_key]
        if self.ssh.bastion and not self.ssh.bastion.host_key:
            out.append(f"bastion {self.ssh.bastion.host}")
        return out

    def _unpinned_host_keys(self) -> list[ProblemItem]:
        why = errors.UNPINNED_HOST_KEY
        problems: list[ProblemItem] = [
            (("masters", i, "hostKey"), None,
             why.format(address=m.address, target=errors.keyscan_target(m.address, m.port or self.ssh.port)))
            for i, m in enumerate(self.masters) if not m.host_key
        ]
        b = self.ssh.bastion
        if b and not b.host_key:
            problems.append((("ssh", "bastion", "hostKey"), None,
                             why.format(address=b.host, target=errors.keyscan_target(b.host, b.port))))
        return problems

    @model_validator(mode="after")
    def _cross(self) -> Settings:
        problems: list[ProblemItem] = []
        if self.ssh.bastion and any(m.address == self.ssh.bastion.host for m in self.masters):
            problems.append(
                (("ssh", "bastion", "host"), self.ssh.bastion.host, "is one of the masters; the jump host must be another machine")
            )
        if not self.apiserver.manage:
            problems.extend(self._unmanaged_problems())
            if self.pki.ca_generation != 1 or self.pki.ca_rotation is not None:
                problems.append((("pki", "caGeneration"), self.pki.ca_generation, errors.ROTATION_UNMANAGED))
        else:
            problems.extend(self._readyz_problems())
        if not self.ssh.insecure_skip_host_key_check:
            problems.extend(self._unpinned_host_keys())
        for i, m in enumerate(self.masters):
            layout = self.master_layout(m)
            # Every layout but static-pod has a non-empty default restart command (components.apiserver
            # LAYOUT_DEFAULTS, a unit test holds it): only a given one can be empty.
            restart = self.apiserver.restart_command
            if self.apiserver.manage and layout is not Layout.STATIC_POD and restart is not None and not restart.strip():
                problems.append(
                    (
                        ("apiserver", "restartCommand"),
                        self.apiserver.restart_command,
                        errors.restart_command_empty(i, m.name, layout.value),
                    )
                )
                break
        if problems:
            raise Problems(problems)
        return self


# --- loading ----------------------------------------------------------------------------------------


def parse(
    raw: Mapping[str, Any], *, read_file: FileReader | None = None, base_dir: Path | str | None = None
) -> Settings:
    """Validate the stack's `metrics-aggregation:*` values; raise ConfigError with every problem.

    Files named in the config (metricsServer.kubeletCaCertFile, pki.clusterCaCertFile) are read with
    `read_file` (default: from the local disk), relative paths against `base_dir` (default: the working
    directory, the project directory under `pulumi`); the returned settings hold their contents."""
    data = {k: v for k, v in raw.items() if v is not None}
    problems: list[str] = []
    if "masters" not in data:
        problems.append(f"{errors.key_path(('masters',))}: {errors.MASTERS_MISSING}")
    if "ssh" not in data:
        data["ssh"] = {}
    try:
        settings = Settings.model_validate(data, context={"read_file": read_file, "base_dir": base_dir})
    except ValidationError as err:
        problems.extend(m for m in errors.messages(err) if not m.startswith(f"{errors.key_path(('masters',))}: (missing)"))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def load(config: Any = None) -> Settings:
    """Read and validate the stack config through pulumi.Config (nothing is registered)."""
    import pulumi

    cfg = config or pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    problems = [] if config is not None else _unknown_top_level_keys()
    for key in TOP_LEVEL_KEYS:
        try:
            raw[key] = cfg.get_object(key)
        except Exception:  # a value that is not valid YAML/JSON; pulumi's message quotes the value
            problems.append(f"{errors.key_path((key,))}: {errors.NOT_YAML}")
    if problems:
        raise ConfigError(problems)
    settings = parse(raw)
    # the checks of how SSH will go that only warn: nothing is wrong with the config itself
    stale_agent = ssh_agent.stale_agent_warning(settings.ssh.agent_socket_path, os.environ)
    if stale_agent:
        pulumi.log.warn(stale_agent)
    unpinned = settings.unpinned_hosts()
    if unpinned:  # only with ssh.insecureSkipHostKeyCheck: true (parse refuses them otherwise)
        pulumi.log.warn(
            f"{NAMESPACE}:ssh.insecureSkipHostKeyCheck is true: no SSH host key is checked for {', '.join(unpinned)}; "
            "whoever answers on those addresses gets the proxy-client key and root commands"
        )
    return settings


def _unknown_top_level_keys() -> list[str]:
    """A misspelt top-level key (`metrics-aggregation:mastres`) would otherwise be ignored silently."""
    from pulumi.runtime import config as runtime_config

    present = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return [
        f"{full}: is not a known key; use one of {', '.join(TOP_LEVEL_KEYS)}"
        for full in sorted(present)
        if full.partition(":")[0] == NAMESPACE and full.partition(":")[2] not in TOP_LEVEL_KEYS
    ]
