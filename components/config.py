"""The typed stack config of metrics-aggregation: parse, validate, explain errors.

Everything the program needs from `Pulumi.<stack>.yaml` is read here, once, into frozen pydantic
models. An invalid stack stops the program before any resource is registered, with one line per
problem that names the key path, the bad value and the fix:

    metrics-aggregation:masters[2].address: '10.0.0.300' is neither an IP address nor a DNS name;
        set it to the master's IPv4 or IPv6 address or its DNS name

Key names are the contract of ../shared/design.md ("Stack config"): they are camelCase in YAML and
snake_case attributes here (pydantic aliases).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
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

NAMESPACE = "metrics-aggregation"
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

# The kube-apiserver flags this program sets itself (Settings.apiserver_flags), each with what to do instead
# of naming it in apiserver.extraFlags / masters[].extraFlags.
MANAGED_FLAGS: dict[str, str] = {
    "--requestheader-client-ca-file": "it points at the aggregator CA this program writes into apiserver.certDir; "
    "set apiserver.certDir (or the master's layout) instead",
    "--requestheader-allowed-names": "it is the proxy-client certificate's CN; set pki.proxyClientCommonName instead",
    "--requestheader-extra-headers-prefix": "this program sets it to X-Remote-Extra-; remove it from extraFlags",
    "--requestheader-group-headers": "this program sets it to X-Remote-Group; remove it from extraFlags",
    "--requestheader-username-headers": "this program sets it to X-Remote-User; remove it from extraFlags",
    "--proxy-client-cert-file": "it points at the proxy-client certificate this program writes into "
    "apiserver.certDir; set apiserver.certDir (or the master's layout) instead",
    "--proxy-client-key-file": "it points at the proxy-client key this program writes into apiserver.certDir; "
    "set apiserver.certDir (or the master's layout) instead",
    "--enable-aggregator-routing": "set apiserver.enableAggregatorRouting (true/false) instead",
}
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
VALUE_CHARS_TEXT = "letters, digits and _ . , : / = @ + * ~ -"
# fullmatch, not match: Python's '$' also matches before a final newline ("2\n" would pass).
_VALUE = re.compile(f"[{VALUE_CHARS}]+")


def is_safe_value(text: Any) -> bool:
    """Whether `text` is one word of the value grammar (VALUE_PATTERN)."""
    return isinstance(text, str) and text.isascii() and _VALUE.fullmatch(text) is not None


def _unsafe_value_message(what: str) -> str:
    return (
        f"is not usable as {what}: use one word of {VALUE_CHARS_TEXT} (no spaces, tabs, line breaks, "
        "quotes, '$', '`', '%', '\\', ';' or '#': it reaches the master as one word of its kube-apiserver "
        "config or of the host script's options, where the shell, systemd or YAML would split or interpret them)"
    )


# apiserver.keyOwner: `user:group` of the proxy-client key, each a lowercase name ([a-z_][a-z0-9_-]*, at most
# 32 characters) or a numeric id (at most 4294967294: chown reads 4294967295 as -1, "unchanged"); a subset of
# the value grammar. The host script re-checks KEY_OWNER_PATTERN (POSIX ERE, C locale) the same way (check_option_values).
_OWNER_PART = "([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})"
KEY_OWNER_PATTERN = f"^{_OWNER_PART}:{_OWNER_PART}$"
_KEY_OWNER = re.compile(f"{_OWNER_PART}:{_OWNER_PART}")
_MAX_ID = 4294967294
# apiserver.containerName: a Kubernetes container name (RFC 1123 label), a subset of the value grammar
_CONTAINER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# How large a CA file (metricsServer.kubeletCaCertFile, pki.clusterCaCertFile) may be: a CA bundle is a
# few KiB, and the kubelet CA goes into a ConfigMap.
MAX_CA_FILE_BYTES = 256 * 1024


class ConfigError(Exception):
    """The stack config is invalid; `problems` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"the stack config of {NAMESPACE} is invalid ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}); nothing was changed:\n  "
            + "\n  ".join(problems)
        )


class _Problems(ValueError):
    """Raised inside validators: problems at paths relative to the model being validated."""

    def __init__(self, items: list[tuple[tuple[str | int, ...], Any, str]]):
        self.items = items
        super().__init__("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, _, m in items))


def _problem(path: tuple[str | int, ...], value: Any, message: str) -> _Problems:
    return _Problems([(path, value, message)])


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
        raise ValueError(
            "is neither an IP address nor a DNS name; set it to an IPv4 or IPv6 address "
            "(no brackets, no port) or a DNS name"
        )
    return value


Address = Annotated[str, Field(min_length=1)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Layout(str, Enum):
    """How kube-apiserver gets its flags on a master."""

    ENV_FILE = "env-file"  # KUBE_APISERVER_OPTS="--a=b \ ..." read by the unit's EnvironmentFile
    SYSTEMD_UNIT = "systemd-unit"  # flags on ExecStart= with backslash continuations
    STATIC_POD = "static-pod"  # kubeadm manifest: the container's command list


LAYOUT_DEFAULTS: dict[Layout, dict[str, str]] = {
    Layout.ENV_FILE: {
        "config_path": "/etc/kubernetes/kube-apiserver.conf",
        "cert_dir": "/etc/kubernetes/ssl",
        "restart_command": "systemctl restart kube-apiserver",
    },
    Layout.SYSTEMD_UNIT: {
        "config_path": "/etc/systemd/system/kube-apiserver.service",
        "cert_dir": "/etc/kubernetes/ssl",
        "restart_command": "systemctl daemon-reload && systemctl restart kube-apiserver",
    },
    Layout.STATIC_POD: {
        "config_path": "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "cert_dir": "/etc/kubernetes/pki",
        # The kubelet restarts the static pod when its manifest changes.
        "restart_command": "",
    },
}


class Master(_Model):
    name: str
    address: Address
    host_key: str | None = None
    port: Port | None = None
    user: str | None = None
    layout: Layout | None = None
    config_path: str | None = None
    extra_flags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _MASTER_NAME.match(v):
            raise ValueError(
                "is not a usable master name; use 1-63 letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit (it becomes part of resource names)"
            )
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, v: str | None) -> str | None:
        return _check_host_key(v)

    @field_validator("config_path")
    @classmethod
    def _config_path(cls, v: str | None) -> str | None:
        return v if v is None else _absolute_path(v)

    @field_validator("extra_flags", mode="before")
    @classmethod
    def _extra_flags(cls, v: Any) -> Any:
        return _check_extra_flags(v)


def _check_host_key(v: str | None) -> str | None:
    if v is not None and not re.match(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+", v):
        raise ValueError(
            "is not an SSH public host key; paste one line of `ssh-keyscan -t ed25519 <address>` "
            "without the host name, e.g. 'ssh-ed25519 AAAA...'"
        )
    return v


def _check_extra_flags(v: Any) -> dict[str, str]:
    """apiserver.extraFlags / masters[].extraFlags: {--name: value} -> the same with string values.

    YAML gives numbers and booleans for unquoted values: whole numbers and true/false become the text
    kube-apiserver expects ('800', 'true'); anything else must be a string."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise _problem(
            (), v, "must be a mapping of kube-apiserver flags to values, e.g. {--requestheader-uid-headers: X-Remote-Uid}"
        )
    problems: list[tuple[tuple[str | int, ...], Any, str]] = []
    out: dict[str, str] = {}
    for name, value in v.items():
        if not isinstance(name, str) or not _FLAG_NAME.match(name):
            problems.append(((), name, _bad_flag_name(name)))
            continue
        if name in MANAGED_FLAGS:
            problems.append(((), name, f"is a flag this program manages itself; {MANAGED_FLAGS[name]}"))
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
                    "is a number with a fraction, which YAML may have changed (1.10 reads as 1.1); "
                    "quote it, e.g. '0.001'" if math.isfinite(value) else "is not a flag value; quote it",
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
            problems.append(((name,), text, _unsafe_value_message("a flag value")))
            continue
        out[name] = text
    if problems:
        raise _Problems(problems)
    return out


def _bad_flag_name(name: Any) -> str:
    text = str(name)
    fix = "is not a kube-apiserver flag name; write it as --name (lowercase letters, digits and dashes)"
    if "=" in text:
        flag, _, value = text.partition("=")
        return f"{fix}, the value apart: '{flag}: {value}'"
    if not text.startswith("-") and _FLAG_NAME.match(f"--{text}"):
        return f"{fix}, e.g. '--{text}'"
    if _FLAG_NAME.match(text.lower()):
        return f"{fix}, e.g. '{text.lower()}'"
    return fix


def _absolute_path(v: str) -> str:
    """A path on the master (configPath, certDir): absolute, no '..' step, one word of the value grammar."""
    if not v.startswith("/") or "/../" in v + "/":
        raise ValueError("must be an absolute path without '..' steps, e.g. /etc/kubernetes/ssl")
    if not is_safe_value(v):
        raise ValueError(_unsafe_value_message("a path on the master"))
    return v


class Bastion(_Model):
    host: Address
    port: Port = 22
    user: str | None = None  # default: ssh.user
    private_key: str | None = None  # default: ssh.privateKey (set with --secret)
    host_key: str | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, v: str | None) -> str | None:
        return _check_host_key(v)


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

    @model_validator(mode="after")
    def _auth(self) -> Ssh:
        if not self.private_key and not self.agent_socket_path:
            raise _problem(
                ("privateKey",),
                None,
                "is missing; set it with `pulumi config set --secret --path ssh.privateKey --raw < "
                "~/.ssh/id_ed25519` (or set ssh.agentSocketPath to use an SSH agent)",
            )
        if self.private_key and "PRIVATE KEY-----" not in self.private_key:
            raise _problem(
                ("privateKey",),
                "<secret>",
                "is not a PEM/OpenSSH private key; set the key file's contents with "
                "`pulumi config set --secret --path ssh.privateKey --raw < keyfile`",
            )
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
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, v: Any) -> Any:
        # pydantic's own messages show the value they refused: the key must not reach them.
        if not isinstance(v, Mapping):
            raise _problem((), f"<{type(v).__name__}>", "must be a mapping {certPem or certFile, keyPem or keyFile}; "
                           "see pki.existingCa in the config reference of README.md")
        known = {"certPem", "keyPem", "certFile", "keyFile", "cert_pem", "key_pem", "cert_file", "key_file"}
        problems = [((k,), "<secret>", "is not a known key of pki.existingCa; use certPem or certFile, and keyPem "
                     "or keyFile") for k in v if k not in known]
        for k in ("keyPem", "key_pem"):
            if k in v and v[k] is not None and not isinstance(v[k], str):
                problems.append(((k,), "<secret>", "must be the PEM text of the CA's private key (a string)"))
        if problems:
            raise _Problems(problems)
        return v

    @field_validator("cert_file", "key_file")
    @classmethod
    def _files(cls, v: str | None) -> str | None:
        return _check_ca_file_path(v)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ExistingCa:
        context = info.context or {}
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        cert_text = _existing_ca_source(self.cert_pem, self.cert_file, "certPem", "certFile", EXISTING_CA_CERT_FILE,
                                        context, problems)
        key_text = _existing_ca_source(self.key_pem.get_secret_value() if self.key_pem else None, self.key_file,
                                       "keyPem", "keyFile", EXISTING_CA_KEY_FILE, context, problems)
        if problems or cert_text is None or key_text is None:
            raise _Problems(problems)
        cert = self._check_cert(cert_text, problems)
        key = self._check_key(key_text, problems)
        if cert is not None and key is not None and _spki(key.public_key()) != _spki(cert.public_key()):
            problems.append(((self.key_source,), self._key_shown,
                             f"does not match the certificate of pki.existingCa.{self.cert_source} "
                             f"({cert.subject.rfc4514_string()}); give that CA certificate's own private key"))
        if problems:
            raise _Problems(problems)
        return self.model_copy(update={"cert_pem": _pem_as_written(cert_text), "key_pem": SecretStr(key_text)})

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
            return _certificate(text).subject.rfc4514_string()
        except ValueError:
            return "<secret>" if "PRIVATE KEY" in text else text[:40]

    @property
    def _key_shown(self) -> str:
        return self.key_file if self.key_file is not None else "<secret>"

    def _check_cert(self, text: str, problems: list[tuple[tuple[str | int, ...], Any, str]]) -> Any:
        cert, problem = _existing_ca_certificate(text)
        found = [problem] if problem is not None else _not_a_usable_ca(cert, dt.datetime.now(dt.UTC))
        problems.extend(((self.cert_source,), self.cert_shown(text), p) for p in found)
        return None if found else cert

    def _check_key(self, text: str, problems: list[tuple[tuple[str | int, ...], Any, str]]) -> Any:
        key, problem = _existing_ca_key(text)
        if problem is not None:
            problems.append(((self.key_source,), self._key_shown, problem))
        return key

    # --- what pki.AggregatorCA needs (valid only after validation) ---

    def certificate(self) -> Any:
        """The CA certificate (cryptography x509.Certificate)."""
        return _certificate(self.cert_pem or "")

    def signing_key_pem(self) -> str:
        """The CA key as unencrypted PKCS#8 PEM, whatever form it was given in (PKCS#1, SEC1, PKCS#8; other
        PEM blocks such as EC PARAMETERS dropped): the tls provider reads only a file's first PEM block, and
        a re-encoded but unchanged key must not replace the proxy-client certificate (caPrivateKeyPem
        forces a new one)."""
        from cryptography.hazmat.primitives import serialization

        key, problem = _existing_ca_key(self.key_pem.get_secret_value() if self.key_pem else "")
        if problem is not None:
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
        """The CA certificate's notAfter, RFC 3339 in UTC (as the tls provider writes validity_end_time)."""
        return self.certificate().not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


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
    cluster_ca_cert_file: str | None = None
    # An existing aggregator/front-proxy CA to sign the proxy-client certificate with (instead of creating
    # one); caCommonName and caValidityHours then do not apply.
    existing_ca: ExistingCa | None = None

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
        if not is_safe_value(v):
            raise ValueError(_unsafe_value_message("the common name that becomes --requestheader-allowed-names")
                             + ", e.g. aggregator")
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [(i, h) for i, h in enumerate(v) if address_kind(h) is None]
        if bad:
            raise _Problems(
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

    @field_validator("cluster_ca_cert_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return _check_ca_file_path(v)

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> Pki:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        # The rules of the CA this program creates. An existing CA may share the proxy certificate's DN (the
        # classic guide's cfssl CA and proxy cert are both CN=aggregator): Go's x509 verification then still
        # finds the CA by name and checks the signature with its key (the cert just carries no
        # authorityKeyIdentifier), so kube-apiserver and metrics-server accept it.
        if self.existing_ca is None and self.ca_common_name == self.proxy_client_common_name:
            problems.append(
                (
                    ("caCommonName",),
                    self.ca_common_name,
                    "equals proxyClientCommonName; the CA and the proxy-client certificate need "
                    "different subjects (e.g. caCommonName: aggregator-ca, proxyClientCommonName: aggregator)",
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
                    f"is longer than caValidityHours ({self.ca_validity_hours}); a leaf must not "
                    "outlive its CA: lower certValidityHours or raise caValidityHours",
                )
            )
        if self.early_renewal_hours >= self.cert_validity_hours:
            problems.append(
                (
                    ("earlyRenewalHours",),
                    self.early_renewal_hours,
                    f"is not below certValidityHours ({self.cert_validity_hours}); the certificate "
                    "would be renewed on every run: lower earlyRenewalHours",
                )
            )
        for i, use in enumerate(self.proxy_client_allowed_uses):
            if use not in TLS_ALLOWED_USES:
                problems.append(
                    (
                        ("proxyClientAllowedUses", i),
                        use,
                        "is not a usage the tls provider knows (it would be dropped silently); "
                        f"use one of: {', '.join(sorted(TLS_ALLOWED_USES))}",
                    )
                )
        if "client_auth" not in self.proxy_client_allowed_uses:
            problems.append(
                (
                    ("proxyClientAllowedUses",),
                    list(self.proxy_client_allowed_uses),
                    "lacks client_auth; kube-apiserver presents this certificate as a client "
                    "(metrics-server rejects it with 'incompatible key usage'): add client_auth",
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
        if problems:
            raise _Problems(problems)
        if from_file is not None:
            return self.model_copy(update={"cluster_ca_cert_pem": from_file})
        return self


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
            raise ValueError("must be a container name (a DNS label: lowercase letters, digits and '-', at most 63), "
                             "e.g. kube-apiserver")
        return v

    @field_validator("key_owner")
    @classmethod
    def _key_owner(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _KEY_OWNER.fullmatch(v) or any(p.isdigit() and int(p) > _MAX_ID for p in v.split(":")):
            raise ValueError(
                "must be user:group, each a name (lowercase letters, digits, '_' and '-', starting with a letter "
                "or '_', at most 32) or a numeric id, e.g. kube:kube (the user kube-apiserver runs as, systemd's "
                "User=)"
            )
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
        if not is_safe_value(v):
            raise ValueError(_unsafe_value_message("the readyz URL the host script polls")
                             + "; e.g. https://127.0.0.1:6443/readyz (IPv6: https://localhost:6443/readyz)")
        return v

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

    def resolved(self, field: str, layout: Layout) -> str:
        value = getattr(self, field)
        return LAYOUT_DEFAULTS[layout][field] if value is None else value


METRIC_RESOLUTION_FLOOR_SECONDS = 10  # metrics-server's default --kubelet-request-timeout


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
    kubelet_ca_cert_file: str | None = None
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
        m = re.match(r"^(\d+)(s|m)$", v)
        if not m or int(m[1]) * (60 if m[2] == "m" else 1) <= METRIC_RESOLUTION_FLOOR_SECONDS:
            raise ValueError(
                f"must be a duration longer than {METRIC_RESOLUTION_FLOOR_SECONDS}s (metrics-server's kubelet "
                "request timeout; metrics-server exits at start otherwise), such as 15s or 1m"
            )
        return v

    @field_validator("kubelet_ca_cert_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return _check_ca_file_path(v)

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> MetricsServer:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        from_file = _ca_pem_or_file(self.kubelet_ca_cert_pem, self.kubelet_ca_cert_file, "kubeletCaCertPem",
                                    "kubeletCaCertFile", info.context or {}, KUBELET_CA_FILE, problems)
        if self.kubelet_ca_cert_file is not None:
            if self.kubelet_insecure_tls:
                problems.append(
                    (
                        ("kubeletInsecureTls",),
                        True,
                        "is set together with kubeletCaCertFile; choose one: remove kubeletInsecureTls "
                        "to verify kubelets with the CA in kubeletCaCertFile",
                    )
                )
        if self.kubelet_insecure_tls and self.kubelet_ca_cert_pem:
            problems.append(
                (
                    ("kubeletInsecureTls",),
                    True,
                    "is set together with kubeletCaCertPem; choose one: remove kubeletInsecureTls "
                    "to verify kubelets with kubeletCaCertPem",
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
                    "collides with the kubelet when hostNetwork is true (bind: address already in "
                    "use, metrics-server#1026); set metricsServer.containerPort to e.g. 4443",
                )
            )
        if problems:
            raise _Problems(problems)
        if from_file is not None:
            return self.model_copy(update={"kubelet_ca_cert_pem": from_file})
        return self


FileReader = Callable[[Path], bytes]


def read_local_file(path: Path) -> bytes:
    """The default FileReader: the file's bytes (at most MAX_CA_FILE_BYTES + 1 of them)."""
    with open(path, "rb") as f:
        return f.read(MAX_CA_FILE_BYTES + 1)


def _check_ca_file_path(v: str | None) -> str | None:
    """The field check of a `*CaCertFile` key: a usable path (the file itself is read by _read_ca_file)."""
    if v is not None and (not v.strip() or any(c in v for c in "\n\0")):
        raise ValueError(
            "must be the path of a PEM file on the machine running pulumi (relative paths are "
            "relative to the project directory)"
        )
    return v


@dataclass(frozen=True)
class CaFileKind:
    """What a CA file key holds (`*CaCertFile`, pki.existingCa.keyFile), for the fix texts of _read_ca_file."""

    # "create it with <what>, or fix the path"
    what: str
    # why a private key must not be in the file: "holds a private key (<path>); <why>: point it at ..."
    # (unused when holds_key)
    private_key_why: str = ""
    # "is set together with <pem key>; choose one: remove <pem key> to read <noun> from the file, ..."
    noun: str = "the CA"
    # The file is a private key (PEM text, checked by ExistingCa), not certificates.
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
    "or of the masters' aggregator-ca.pem",
    private_key_why="the file goes to every master as aggregator-ca.pem; give the key in pki.existingCa.keyFile",
    noun="the CA certificate",
)
EXISTING_CA_KEY_FILE = CaFileKind(
    what="the existing aggregator CA's private key, e.g. a copy of /etc/kubernetes/pki/front-proxy-ca.key "
    "(kubeadm) or cfssl's aggregator-ca-key.pem",
    noun="the CA's private key",
    holds_key=True,
)


def _ca_pem_or_file(pem: str | None, path: str | None, pem_key: str, file_key: str, context: Mapping[str, Any],
                    kind: CaFileKind, problems: list[tuple[tuple[str | int, ...], Any, str]]) -> str | None:
    """The rule of each "CA as PEM text or as a file" key pair: the file's PEM text when only the file key
    is set and it is usable; otherwise None, with what is wrong appended to `problems`."""
    if path is None:
        return None
    if pem is not None:
        problems.append(((file_key,), path, f"is set together with {pem_key}; choose one: remove {pem_key} to read "
                         f"{kind.noun} from the file, or remove {file_key}"))
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
    read: FileReader = context.get("read_file") or read_local_file
    base = Path(context.get("base_dir") or Path.cwd())
    full = Path(path).expanduser()
    if not full.is_absolute():
        full = base / full
    where = f"{full}" if Path(path).expanduser().is_absolute() else f"{full} (relative to the project directory {base})"
    try:
        data = read(full)
    except FileNotFoundError:
        return None, (
            f"cannot be read: {where} does not exist; create it with {kind.what}, or fix the path"
        )
    except IsADirectoryError:
        return None, f"cannot be read: {where} is a directory; point it at {kind.file_noun}"
    except OSError as e:
        return None, (
            f"cannot be read: {where}: {e.strerror or e}; make it readable by the user running pulumi, "
            "or fix the path"
        )
    if len(data) > MAX_CA_FILE_BYTES:
        return None, f"is larger than {MAX_CA_FILE_BYTES // 1024} KiB ({where}); point it at {kind.file_noun} only"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return (_key_file_text if kind.holds_key else _cert_file_text)(text, where, kind)


def _cert_file_text(text: str, where: str, kind: CaFileKind) -> tuple[str | None, str | None]:
    if "PRIVATE KEY-----" in text:
        return None, (
            f"holds a private key ({where}); {kind.private_key_why}: point it at the CA "
            "certificate only (-----BEGIN CERTIFICATE-----)"
        )
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        return None, (
            f"is not a PEM certificate ({where}): it needs one or more -----BEGIN CERTIFICATE----- blocks "
            "(convert a DER file with `openssl x509 -inform der -in ca.der -out ca.pem`)"
        )
    return text, None


def _key_file_text(text: str, where: str, kind: CaFileKind) -> tuple[str | None, str | None]:
    if "PRIVATE KEY-----" not in text:
        return None, (
            f"holds no PEM private key ({where}); point it at {kind.what} (a DER key converts with "
            "`openssl pkey -inform der -in ca.der -out ca-key.pem`)"
        )
    return text, None


# --- an existing aggregator CA (pki.existingCa) ------------------------------------------------------

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)
# A certificate text that can go to the masters unchanged: one block, nothing around it.
_ONE_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----(\r?\n)?")
_EXISTING_CA_MISSING = {
    "certPem": "is required with pki.existingCa: set the CA certificate with `pulumi config set --path "
    "pki.existingCa.certPem < front-proxy-ca.crt`, or set pki.existingCa.certFile to its path",
    "keyPem": "is required with pki.existingCa: set the CA's private key as a secret with `pulumi config set "
    "--secret --path pki.existingCa.keyPem < front-proxy-ca.key`, or set pki.existingCa.keyFile to its path",
}
_STRONG_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_ENCRYPTED_KEY = (
    "is an encrypted private key, and the program cannot ask for its passphrase: decrypt it "
    "(`openssl pkey -in ca-key.pem -out ca-key.plain.pem`) and give the decrypted key (as secret config "
    "with keyPem it stays encrypted in the stack)"
)


def _existing_ca_source(pem: str | None, path: str | None, pem_key: str, file_key: str, kind: CaFileKind,
                        context: Mapping[str, Any], problems: list[tuple[tuple[str | int, ...], Any, str]]) -> str | None:
    """The text of one item of pki.existingCa (certificate or key): exactly one of its PEM and file keys."""
    if pem is None and path is None:
        problems.append(((pem_key,), None, _EXISTING_CA_MISSING[pem_key]))
        return None
    return pem if path is None else _ca_pem_or_file(pem, path, pem_key, file_key, context, kind, problems)


def _certificate(text: str) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificate(text.encode())


def _spki(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _existing_ca_certificate(text: str) -> tuple[Any, str | None]:
    """(the one certificate of pki.existingCa.certPem/certFile, None) or (None, what is wrong)."""
    from cryptography import x509

    if "PRIVATE KEY-----" in text:
        return None, (
            "holds a private key; the certificate goes to every master as aggregator-ca.pem: give only the CA "
            "certificate here, and its key in pki.existingCa.keyPem (secret) or pki.existingCa.keyFile"
        )
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        return None, (
            "is not a PEM certificate: give the CA certificate (-----BEGIN CERTIFICATE-----; convert a DER "
            "file with `openssl x509 -inform der -in ca.der -out ca.pem`)"
        )
    if len(certs) > 1:
        return None, (
            f"holds {len(certs)} certificates; give only the CA certificate whose private key is in "
            "pki.existingCa.keyPem/keyFile (it goes to every master as aggregator-ca.pem)"
        )
    return certs[0], None


def _not_a_usable_ca(cert: Any, now: dt.datetime) -> list[str]:
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
            "aggregator-ca.pem), not a leaf such as the proxy-client certificate"
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
            f"expired on {_when(not_after)} ({_span(now - not_after)} ago): renew the CA certificate (with the "
            "same key, certificates it signed stay valid), or remove pki.existingCa to let the program create a CA"
        )
    elif now < not_before:
        out.append(f"is not valid before {_when(not_before)}; check this machine's clock, or wait until then")
    return out


def _existing_ca_key(text: str) -> tuple[Any, str | None]:
    """(the private key of pki.existingCa.keyPem/keyFile, None) or (None, what is wrong). PKCS#1 (RSA PRIVATE
    KEY), SEC1 (EC PRIVATE KEY, also after an EC PARAMETERS block) and PKCS#8 (PRIVATE KEY) are read; no
    message quotes the key or cryptography's own error text."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    blocks = [m for m in _PEM_BLOCK.finditer(text) if m.group(1).endswith("PRIVATE KEY")]
    if any(m.group(1) == "ENCRYPTED PRIVATE KEY" for m in blocks) or "Proc-Type: 4,ENCRYPTED" in text:
        return None, _ENCRYPTED_KEY
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
        return None, _ENCRYPTED_KEY
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


def _pem_as_written(text: str) -> str:
    """The certificate text the masters get as aggregator-ca.pem: as given when it is exactly one PEM block
    (a user's existing file then stays byte for byte; `pulumi config set` without --raw drops the final
    newline, which is put back, and CRLF line ends become LF as the host script writes them), else the
    certificate alone, re-encoded."""
    if _ONE_CERT_BLOCK.fullmatch(text):
        text = text.replace("\r\n", "\n")
        return text if text.endswith("\n") else text + "\n"
    from cryptography.hazmat.primitives import serialization

    return _certificate(text).public_bytes(serialization.Encoding.PEM).decode()


def _when(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(d: dt.timedelta) -> str:
    """A duration in the unit a person reads it in: days, hours or minutes."""
    seconds = abs(d.total_seconds())
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} days"
    if seconds >= 2 * 3600:
        return f"{int(seconds // 3600)} hours"
    return f"{max(1, int(seconds // 60))} minutes"


def _existing_ca_in_pki(pki: Pki, cluster_pem: str | None, now: dt.datetime) -> list[tuple[tuple[str | int, ...], Any, str]]:
    """The checks of pki.existingCa that need the rest of pki: it is not the cluster CA, and it outlives
    a proxy-client certificate issued now (pki.certValidityHours)."""
    ca = pki.existing_ca
    assert ca is not None
    cert = ca.certificate()
    where = ("existingCa", ca.cert_source)
    out: list[tuple[tuple[str | int, ...], Any, str]] = []
    cluster = _cluster_ca_match(cert, cluster_pem)
    if cluster is not None:
        source = "clusterCaCertFile" if pki.cluster_ca_cert_file is not None else "clusterCaCertPem"
        out.append((where, ca.cert_shown(), (
            f"is the cluster CA ({cluster} as pki.{source}); kube-apiserver checks --requestheader-client-ca-file "
            "before --client-ca-file, so every client certificate of the cluster whose CN is not in "
            "--requestheader-allowed-names would be refused: give the aggregator/front-proxy CA (kubeadm: "
            "/etc/kubernetes/pki/front-proxy-ca.crt), or remove pki.existingCa to let the program create one"
        )))
    proxy_end = now + dt.timedelta(hours=pki.cert_validity_hours)
    not_after = cert.not_valid_after_utc
    if now < not_after < proxy_end:
        hours = int((not_after - now).total_seconds() // 3600)
        fix = "renew the CA"
        if hours >= 1:
            also = " (and pki.earlyRenewalHours below that)" if hours <= pki.early_renewal_hours else ""
            fix = f"lower pki.certValidityHours to at most {hours}{also}, or renew the CA"
        out.append((where, ca.cert_shown(), (
            f"expires on {_when(not_after)}, {_span(proxy_end - not_after)} before the proxy-client certificate "
            f"would (now + pki.certValidityHours {pki.cert_validity_hours} = {_when(proxy_end)}): {fix}"
        )))
    return out


def _cluster_ca_match(cert: Any, cluster_pem: str | None) -> str | None:
    """'the same certificate' / 'the same key' when `cert` is a certificate of the cluster CA PEM (a bundle)."""
    if not cluster_pem:
        return None
    from cryptography import x509

    try:
        cluster = x509.load_pem_x509_certificates(cluster_pem.encode())
    except ValueError:
        return None  # reported on the cluster CA key itself
    if any(c == cert for c in cluster):
        return "the same certificate"
    if any(_spki(c.public_key()) == _spki(cert.public_key()) for c in cluster):
        return "the same key"
    return None


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
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
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
            raise _Problems(problems)
        return v

    # --- derived values (the program's single source for them) ---

    def master_layout(self, m: Master) -> Layout:
        return m.layout or self.apiserver.layout

    def master_config_path(self, m: Master) -> str:
        return m.config_path or self.apiserver.resolved("config_path", self.master_layout(m))

    def cert_dir(self, m: Master) -> str:
        return self.apiserver.resolved("cert_dir", self.master_layout(m))

    def restart_command(self, m: Master) -> str:
        return self.apiserver.resolved("restart_command", self.master_layout(m))

    def extra_flags(self, m: Master | None = None) -> dict[str, str]:
        """apiserver.extraFlags with master m's extraFlags merged over them (the master's value wins)."""
        merged = {**self.apiserver.extra_flags, **(m.extra_flags if m else {})}
        return dict(sorted(merged.items()))

    def apiserver_flags(self, master: Master | None = None) -> dict[str, str]:
        """The kube-apiserver flags the program sets on `master` (design.md, "Files on each master"):
        the aggregation flags (paths in the master's certDir), then apiserver.extraFlags merged with the
        master's extraFlags, sorted by name.

        Without a master: the set common to every master, the `apiserverFlags` output: the default
        layout's certDir and apiserver.extraFlags only (no master's own extraFlags)."""
        if master is not None and not isinstance(master, Master):
            raise TypeError(
                f"apiserver_flags takes a Master (for its certDir and extraFlags), not {type(master).__name__}: "
                "call settings.apiserver_flags(master)"
            )
        d = self.cert_dir(master) if master else self.apiserver.resolved("cert_dir", self.apiserver.layout)
        flags = {
            "--requestheader-client-ca-file": f"{d}/aggregator-ca.pem",
            # the proxy-client certificate's CN (components/pki.py requestheader_allowed_names)
            "--requestheader-allowed-names": self.pki.proxy_client_common_name,
            "--requestheader-extra-headers-prefix": "X-Remote-Extra-",
            "--requestheader-group-headers": "X-Remote-Group",
            "--requestheader-username-headers": "X-Remote-User",
            "--proxy-client-cert-file": f"{d}/aggregator.pem",
            "--proxy-client-key-file": f"{d}/aggregator-key.pem",
        }
        if self.apiserver.enable_aggregator_routing:
            flags["--enable-aggregator-routing"] = "true"
        flags.update(self.extra_flags(master))
        return flags

    def _unmanaged_problems(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        """With apiserver.manage: false this program writes nothing on the masters, so a setting that
        only says what to write there would be silently ignored: name it instead."""
        why = ("is set but apiserver.manage is false, so this program sets no flag on the masters; "
               "add the flag to the apiserver's own config (kubeadm: ClusterConfiguration.apiServer.extraArgs), "
               "or set apiserver.manage: true")
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if self.apiserver.extra_flags:
            problems.append((("apiserver", "extraFlags"), dict(self.apiserver.extra_flags), why))
        for i, m in enumerate(self.masters):
            if m.extra_flags:
                problems.append((("masters", i, "extraFlags"), dict(m.extra_flags), why))
        if self.apiserver.key_owner:
            problems.append((("apiserver", "keyOwner"), self.apiserver.key_owner,
                             "is set but apiserver.manage is false, so this program writes no key on the masters; "
                             "remove it, or set apiserver.manage: true"))
        return problems

    def _readyz_problems(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        """readyzUrl must reach the apiserver of the master being rolled, not a load balancer or another
        master that answers 200 while this one is down: a loopback address, localhost, or (one master)
        that master's own address. And the steady run must fit in the ready timeout."""
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        a = self.apiserver
        host = (urlsplit(a.readyz_url).hostname or "").lower()
        for m in self.masters:
            if _is_loopback(host) or host == m.address.lower().rstrip("."):
                continue
            problems.append((("apiserver", "readyzUrl"), a.readyz_url,
                             f"points at {host}, which is not master {m.name} ({m.address}) itself: the rollout waits "
                             "for the apiserver it just restarted, and a load balancer or another master would answer "
                             "for it; use a loopback address, e.g. https://127.0.0.1:6443/readyz (or "
                             "https://localhost:6443/readyz)"))
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

    def _unpinned_host_keys(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        why = ("is required: without it the program does not check whom it connects to, and sends the "
               "proxy-client key (and root commands) to whoever answers on {address}; pin the key with one "
               "line of `ssh-keyscan -t ed25519 {address}` without the host name, checked against the host's "
               "own /etc/ssh/ssh_host_ed25519_key.pub, or set ssh.insecureSkipHostKeyCheck: true where nobody "
               "can stand in for the host")
        problems: list[tuple[tuple[str | int, ...], Any, str]] = [
            (("masters", i, "hostKey"), None, why.format(address=m.address))
            for i, m in enumerate(self.masters) if not m.host_key
        ]
        if self.ssh.bastion and not self.ssh.bastion.host_key:
            problems.append((("ssh", "bastion", "hostKey"), None, why.format(address=self.ssh.bastion.host)))
        return problems

    @model_validator(mode="after")
    def _cross(self) -> Settings:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if self.ssh.bastion and any(m.address == self.ssh.bastion.host for m in self.masters):
            problems.append(
                (("ssh", "bastion", "host"), self.ssh.bastion.host, "is one of the masters; the jump host must be another machine")
            )
        if not self.apiserver.manage:
            problems.extend(self._unmanaged_problems())
        else:
            problems.extend(self._readyz_problems())
        if not self.ssh.insecure_skip_host_key_check:
            problems.extend(self._unpinned_host_keys())
        for i, m in enumerate(self.masters):
            layout = self.master_layout(m)
            if self.apiserver.manage and layout is not Layout.STATIC_POD and not self.restart_command(m).strip():
                problems.append(
                    (
                        ("apiserver", "restartCommand"),
                        self.apiserver.restart_command,
                        f"is empty but masters[{i}] ({m.name}) uses layout {layout.value}, which needs "
                        "a restart command such as `systemctl restart kube-apiserver`",
                    )
                )
                break
        if problems:
            raise _Problems(problems)
        return self


# --- loading and error formatting -------------------------------------------------------------


def _key_path(loc: tuple[str | int, ...]) -> str:
    """`metrics-aggregation:masters[1].extraFlags["--v"]`: Pulumi's --path syntax (a key that is not an
    identifier, such as a flag name, in brackets)."""
    out = f"{NAMESPACE}:"
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", part):
            out += f"[{json.dumps(part)}]"
        else:
            out += part if i == 0 else f".{part}"
    return out


# Keys whose values are secrets (`pulumi config set --secret`), in both spellings pydantic accepts, and the
# mappings that hold them: a problem there shows '<secret>', never the value (CI logs keep error messages).
SECRET_KEYS = frozenset({"privateKey", "privateKeyPassword", "keyPem", "private_key", "private_key_password", "key_pem"})
_SECRET_HOLDERS = frozenset({("ssh",), ("ssh", "bastion"), ("pki", "existingCa"), ("pki", "existing_ca")})
_UNKNOWN_KEY = (
    "is not a known key (its value is not shown: a misspelt key may hold a secret); check its spelling against "
    "the config reference in README.md"
)


def _shown(loc: tuple[str | int, ...], value: Any, *, holders: bool = True) -> Any:
    """The value a problem at `loc` may show: '<secret>' at a secret key or (`holders`: pydantic's own
    errors, which show whatever was given) in place of a mapping holding one; None stays '(missing)'."""
    if value is None:
        return None
    if any(isinstance(p, str) and p in SECRET_KEYS for p in loc):
        return "<secret>"
    if holders and tuple(p for p in loc if isinstance(p, str)) in _SECRET_HOLDERS and not isinstance(value, Mapping):
        return "<secret>"
    return value


def _show(value: Any) -> str:
    if value is None:
        return "(missing)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_PYDANTIC_HINTS = {
    "missing": lambda e: "is required; set it in Pulumi.<stack>.yaml",
    "enum": lambda e: f"is not one of {e['ctx'].get('expected', '')}",
    "literal_error": lambda e: f"is not one of {e['ctx'].get('expected', '')}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx'].get('ge')}",
    "less_than_equal": lambda e: f"must be <= {e['ctx'].get('le')}",
    "greater_than": lambda e: f"must be > {e['ctx'].get('gt')}",
    "int_parsing": lambda e: "must be a whole number",
    "int_from_float": lambda e: "must be a whole number",
    "bool_parsing": lambda e: "must be true or false",
    "string_type": lambda e: "must be a string",
    "string_too_short": lambda e: "must not be empty",
    "model_type": lambda e: "must be a mapping of keys (see the config reference in README.md)",
    "tuple_type": lambda e: "must be a list",
}


def _messages(err: ValidationError) -> list[str]:
    lines: list[str] = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, _Problems):
            for rel, value, message in cause.items:
                lines.append(f"{_key_path(loc + rel)}: {_show(_shown(loc + rel, value, holders=False))} {message}")
            continue
        if e["type"] == "extra_forbidden":
            lines.append(f"{_key_path(loc)}: {_UNKNOWN_KEY}")
            continue
        if e["type"] == "value_error":
            message = str(cause) if cause is not None else e["msg"]
        else:
            hint = _PYDANTIC_HINTS.get(e["type"])
            message = hint(e) if hint else e["msg"]
        value = e.get("input") if e["type"] != "missing" else None
        value = _shown(loc, value)
        if isinstance(value, Mapping):
            value = "{...}"
        lines.append(f"{_key_path(loc)}: {_show(value)} {message}")
    return lines


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
        problems.append(
            f"{_key_path(('masters',))}: (missing) is required; list the masters in rollout order, "
            "e.g. [{name: k8s-master1, address: 10.0.0.101}]"
        )
    if "ssh" not in data:
        data["ssh"] = {}
    try:
        settings = Settings.model_validate(data, context={"read_file": read_file, "base_dir": base_dir})
    except ValidationError as err:
        problems.extend(m for m in _messages(err) if not m.startswith(f"{_key_path(('masters',))}: (missing)"))
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
            problems.append(f"{_key_path((key,))}: could not be read as YAML/JSON (its value is not shown: it may "
                            "hold a secret); fix its YAML")
    if problems:
        raise ConfigError(problems)
    settings = parse(raw)
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
