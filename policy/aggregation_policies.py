"""The policy logic of the metrics-aggregation guardrails (pulumi-policy), as plain functions.

`__main__.py` only wires `POLICIES` into a `PolicyPack`; constructing a PolicyPack starts the analyzer
server and never returns, so nothing here does. Each validation takes the pulumi-policy argument bag
(`ResourceValidationArgs` / `StackValidationArgs`) and a `report_violation` callback, which tests
build by hand.

Policies (issue 6, §3) and what they read:

| policy | kind | resources (type token: property names as in state, camelCase) |
|---|---|---|
| aggregator-ca-not-cluster-ca | stack | tls SelfSignedCert (isCaCertificate, subject.commonName, certPem), LocallySignedCert (caCertPem: with pki.existingCa the CA is no resource of the stack, only the signer of the proxy cert) vs config clusterCaCertPem (or the file of pki.clusterCaCertFile) |
| proxy-client-cert-accepted | stack | tls LocallySignedCert `proxy-client` (allowedUses), CertRequest `proxy-client` (subject.commonName), ApiserverAggregation (masters[].flags: --requestheader-allowed-names; masters[].flagsStep names the command:remote:Command reported) |
| no-kubelet-insecure-tls-in-production | resource | kubernetes Deployment (container args/command), ApiserverAggregation (masters[].flags) |
| no-insecure-skip-tls-verify-in-production | resource | kubernetes APIService (spec.insecureSkipTLSVerify) |
| strong-keys | resource | tls PrivateKey (algorithm, rsaBits, ecdsaCurve) |
| leaf-validity-bounded | resource | tls LocallySignedCert / non-CA SelfSignedCert (validityPeriodHours) vs config maxLeafValidityHours |
| host-keys-pinned-in-production | resource | command:remote:Command (connection.hostKey, connection.proxy.hostKey) |
| no-dangerous-apiserver-flags | resource | ApiserverAggregation (masters[].flags and masters[].certDir) vs config deniedFlags |

Resources are found by type and exact logical name, and flags by name, as components/contract.py defines
them: what every master's flags step sets is an input (and output) of the ApiserverAggregation component,
so no command line is parsed here.

Policy config (per policy, see `pack_config.py`): `production` (bool; default: true when the stack is
named prod or production), `maxLeafValidityHours` (default 8760), `clusterCaCertPem` (optional; default:
the stack config `metrics-aggregation:pki.clusterCaCertPem` when the CLI passes the stack config, else
the file named by `metrics-aggregation:pki.clusterCaCertFile`, read by the pack itself, a relative path
against its working directory, through components/ca_files.py as the stack config reads it; a file it
cannot read or that holds no certificate is a violation),
`deniedFlags` (kube-apiserver flag names the program must never set; pack_config.py writes
DEFAULT_DENIED_FLAGS).

Values that are unknown during a preview (e.g. a certificate not created yet) are skipped, not guessed:
a check that needs them runs again on the next preview or `up`.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

from components import ca_files, contract

PACK_NAME = "metrics-aggregation-guardrails"
NAMESPACE = contract.NAMESPACE
DEFAULT_MAX_LEAF_VALIDITY_HOURS = 8760
PRODUCTION_STACK_NAMES = frozenset({"prod", "production"})

SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"
CERT_REQUEST = "tls:index/certRequest:CertRequest"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
REMOTE_COMMAND = "command:remote:Command"
APISERVER = contract.APISERVER_TYPE
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
API_SERVICE = "kubernetes:apiregistration.k8s.io/v1:APIService"

PROXY_CLIENT = contract.PROXY_CLIENT_CERT_NAME
ALLOWED_NAMES_FLAG = contract.REQUESTHEADER_ALLOWED_NAMES
KUBELET_INSECURE_FLAG = "--kubelet-insecure-tls"
# Flags no stack should have this program set, whatever the value: static bearer tokens in a file, and the
# unauthenticated, unauthorized HTTP port of old kube-apiservers.
DEFAULT_DENIED_FLAGS = ("--basic-auth-file", "--insecure-bind-address", "--insecure-port", "--token-auth-file")
# strconv.ParseBool's true values: what kube-apiserver reads as true
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
# The tls provider's ecdsa_curve default is P224, so an ECDSA key without a curve is a P224 key.
TLS_DEFAULT_RSA_BITS = 2048
TLS_DEFAULT_ECDSA_CURVE = "P224"
STRONG_ECDSA_CURVES = ("P256", "P384", "P521")

ReportViolation = Callable[..., None]


# --- reading resource properties -------------------------------------------------------------------


class _Unknown:
    """A value not known yet (a preview before the resource exists)."""

    def __repr__(self) -> str:
        return "<unknown>"

    def __bool__(self) -> bool:
        return False


UNKNOWN: Any = _Unknown()
_UNKNOWN_SENTINELS = {
    UNKNOWN_STRING_VALUE, UNKNOWN_BOOLEAN_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_ARRAY_VALUE,
    UNKNOWN_OBJECT_VALUE,
}


def is_unknown(value: Any) -> bool:
    return isinstance(value, _Unknown) or (isinstance(value, str) and value in _UNKNOWN_SENTINELS)


def get(props: Any, *path: str | int, default: Any = None) -> Any:
    """props[path...]; `default` when absent, UNKNOWN when a step is unknown (never raises).

    Works on pulumi-policy's unknown-checking proxies (which raise UnknownValueError on access) and on
    plain dicts holding the engine's unknown sentinels alike.
    """
    node = props
    try:
        for key in path:
            if is_unknown(node):
                return UNKNOWN
            if isinstance(key, int):
                if not isinstance(node, Sequence) or isinstance(node, str) or key >= len(node):
                    return default
                node = node[key]
            else:
                if not isinstance(node, Mapping) or key not in node:
                    return default
                node = node[key]
    except UnknownValueError:
        return UNKNOWN
    if is_unknown(node):
        return UNKNOWN
    return default if node is None else node


def _items(value: Any) -> list[Any]:
    """A list property as a plain list; unknown or absent: []."""
    if is_unknown(value) or value is None or isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return []
    out = []
    try:
        for item in value:
            out.append(item)
    except UnknownValueError:
        return []
    return out


@dataclass(frozen=True)
class MasterFlags:
    """What one master's flags step sets, as ApiserverAggregation records it (contract.APISERVER_MASTERS)."""

    master: str
    step: str  # the logical name of the master's flags command
    cert_dir: str
    flags: dict[str, str]


def master_flags(props: Any) -> list[MasterFlags]:
    """The `masters` of an ApiserverAggregation's properties; an unknown or malformed entry is skipped."""
    out = []
    for entry in _items(get(props, contract.APISERVER_MASTERS)):
        name, step = get(entry, contract.MASTER_NAME), get(entry, contract.MASTER_FLAGS_STEP)
        flags = get(entry, contract.MASTER_FLAGS)
        if not isinstance(name, str) or not isinstance(step, str) or not isinstance(flags, Mapping):
            continue
        cert_dir = get(entry, contract.MASTER_CERT_DIR)
        try:  # the pulumi-policy proxy raises on an unknown value; the program's values are all known
            known = {k: str(v) for k, v in flags.items() if isinstance(k, str) and not is_unknown(v)}
        except UnknownValueError:
            continue
        out.append(MasterFlags(name, step, cert_dir if isinstance(cert_dir, str) else "", known))
    return out


# --- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    production: bool
    max_leaf_validity_hours: int
    cluster_ca_cert_pem: str | None
    # The stack config pki.clusterCaCertFile, when no PEM is given (read by cluster_ca()).
    cluster_ca_cert_file: str | None = None


def _stack_config(key: str) -> Any:
    """A value of the stack config the CLI hands to policy packs (PULUMI_CONFIG), parsed; None if absent."""
    try:
        raw = json.loads(os.environ.get("PULUMI_CONFIG") or "{}").get(f"{NAMESPACE}:{key}")
        return json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, AttributeError):
        return None


def settings_from(config: Mapping[str, Any] | None) -> Settings:
    config = dict(config or {})
    production = config.get("production")
    if production is None:
        production = os.environ.get("PULUMI_STACK", "") in PRODUCTION_STACK_NAMES
    hours = config.get("maxLeafValidityHours")
    max_hours = int(hours) if isinstance(hours, int | float) and hours > 0 else DEFAULT_MAX_LEAF_VALIDITY_HOURS
    cluster_ca = config.get("clusterCaCertPem")
    cluster_ca_file = None
    if not cluster_ca:
        pki = _stack_config("pki")
        if isinstance(pki, Mapping):
            cluster_ca = pki.get("clusterCaCertPem")
            if not cluster_ca and isinstance(pki.get("clusterCaCertFile"), str) and pki["clusterCaCertFile"]:
                cluster_ca_file = pki["clusterCaCertFile"]
    return Settings(bool(production), max_hours, cluster_ca or None, cluster_ca_file)


CLUSTER_CA_FILE_KEY = f"{NAMESPACE}:pki.clusterCaCertFile"


def cluster_ca(settings: Settings) -> tuple[str | None, str | None]:
    """(the cluster CA's PEM or None, None) or (None, why the clusterCaCertFile could not be used).

    The PEM of the policy config or of the stack config pki.clusterCaCertPem as given; otherwise the file
    of the stack config pki.clusterCaCertFile, read as the stack config reads it (components/ca_files.py),
    a relative path against the working directory (under `pulumi preview/up`, the directory pulumi runs
    the pack in)."""
    if settings.cluster_ca_cert_pem or not settings.cluster_ca_cert_file:
        return settings.cluster_ca_cert_pem, None
    given = settings.cluster_ca_cert_file
    full, where = ca_files.locate(given, Path.cwd(), "the working directory")
    text, fault = ca_files.read_ca_file(full, where)
    if fault is None:
        return text, None
    return None, (
        f"{CLUSTER_CA_FILE_KEY} (stack config): {given!r} {fault.text}; the aggregator CA cannot be compared "
        "with the cluster CA: put the cluster CA certificate (kube-apiserver's --client-ca-file, e.g. "
        "/etc/kubernetes/pki/ca.crt) there, or set policy config clusterCaCertPem "
        "(policy/pack_config.py --cluster-ca-cert FILE)."
    )


# --- certificates (cryptography) -------------------------------------------------------------------


@dataclass(frozen=True)
class CertInfo:
    der: bytes
    public_key_der: bytes
    common_name: str | None


def cert_info(pem: Any) -> CertInfo | None:
    """DER, public key and subject CN of the first certificate in a PEM string; None if not one."""
    if not isinstance(pem, str) or is_unknown(pem) or "BEGIN CERTIFICATE" not in pem:
        return None
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    try:
        cert = ca_files.certificate(pem)
    except ValueError:
        return None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(cert.public_bytes(Encoding.DER), ca_files.spki(cert.public_key()), str(cns[0].value) if cns else None)


# --- stack policies --------------------------------------------------------------------------------


def validate_ca_not_cluster_ca(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """The requestheader (aggregator) CA must be its own CA, never the cluster CA.

    Any certificate signed by the requestheader CA with an allowed CN can assert any user to the
    apiserver; with the cluster CA, every kubelet/admin client certificate signer becomes that CA.
    """
    settings = settings_from(args.get_config())
    pem, problem = cluster_ca(settings)
    if problem:
        report_violation(problem, None)
    cluster = cert_info(pem)
    source = "clusterCaCertPem" if settings.cluster_ca_cert_pem else "pki.clusterCaCertFile"
    hint = (
        "generate a separate aggregator CA (pki.caCommonName names it) and keep the cluster CA out of "
        "--requestheader-client-ca-file"
    )
    # CAs of the stack: their names are checked on the CA itself; a signer that is none of them is an existing
    # CA given in config (pki.existingCa), whose name is checked on the certificate it signed.
    own_cas = {
        info.der
        for r in args.resources
        if r.resource_type == SELF_SIGNED_CERT and (info := cert_info(get(r.props, "certPem"))) is not None
    }
    for r in args.resources:
        if r.resource_type == SELF_SIGNED_CERT and get(r.props, "isCaCertificate") is True:
            cn = get(r.props, "subject", "commonName")
            mine = cert_info(get(r.props, "certPem"))
            if cluster and mine and (mine.der == cluster.der or mine.public_key_der == cluster.public_key_der):
                report_violation(
                    f"CA '{r.name}' is the cluster CA (same certificate or key as {source}); {hint}.",
                    r.urn,
                )
            elif cluster and isinstance(cn, str) and cluster.common_name and cn == cluster.common_name:
                report_violation(
                    f"CA '{r.name}' has the cluster CA's common name '{cn}' ({source}); the "
                    f"requestheader CA must be a different CA with its own name: {hint}.",
                    r.urn,
                )
            elif not cluster and cn == "kubernetes":
                report_violation(
                    f"CA '{r.name}' is named 'kubernetes', the name of the cluster CA in kubeadm and most "
                    f"binary installs; {hint} (set policy config clusterCaCertPem for an exact check).",
                    r.urn,
                )
        elif r.resource_type == LOCALLY_SIGNED_CERT:
            signer = cert_info(get(r.props, "caCertPem"))
            if signer is None:
                continue
            if cluster and (signer.der == cluster.der or signer.public_key_der == cluster.public_key_der):
                report_violation(
                    f"certificate '{r.name}' is signed by the cluster CA (caCertPem equals {source}); "
                    f"{hint}.",
                    r.urn,
                )
            elif signer.der not in own_cas:
                _check_existing_ca_name(r, signer, cluster, source, report_violation)


def _check_existing_ca_name(r: Any, signer: CertInfo, cluster: CertInfo | None, source: str,
                            report_violation: ReportViolation) -> None:
    """The name checks of validate_ca_not_cluster_ca for a signer that is no CA of the stack (pki.existingCa)."""
    hint = (
        "give pki.existingCa the aggregator/front-proxy CA (kubeadm: /etc/kubernetes/pki/front-proxy-ca.crt), "
        "never the cluster CA, or remove pki.existingCa to let the program create one"
    )
    cn = signer.common_name
    if cluster and cn and cn == cluster.common_name:
        report_violation(
            f"certificate '{r.name}' is signed by a CA named '{cn}', the cluster CA's common name ({source}); the "
            f"requestheader CA must be a different CA with its own name: {hint}.",
            r.urn,
        )
    elif not cluster and cn == "kubernetes":
        report_violation(
            f"certificate '{r.name}' is signed by a CA named 'kubernetes', the name of the cluster CA in kubeadm "
            f"and most binary installs; {hint} (set policy config clusterCaCertPem for an exact check).",
            r.urn,
        )


def validate_proxy_client_cert(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """The proxy-client certificate carries client_auth and its CN is in --requestheader-allowed-names."""
    by_type: dict[str, list[Any]] = {}
    for r in args.resources:
        by_type.setdefault(r.resource_type, []).append(r)

    certs = [r for r in by_type.get(LOCALLY_SIGNED_CERT, []) if r.name == PROXY_CLIENT]
    for cert in certs:
        uses = get(cert.props, "allowedUses")
        if is_unknown(uses):
            continue
        if "client_auth" not in [u for u in _items(uses) if isinstance(u, str)]:
            report_violation(
                f"proxy-client certificate '{cert.name}' lacks client_auth in allowedUses "
                f"({sorted(u for u in _items(uses) if isinstance(u, str))}); extension apiservers reject it "
                "('incompatible key usage'): add client_auth (pki.proxyClientAllowedUses).",
                cert.urn,
            )

    requests = [r for r in by_type.get(CERT_REQUEST, []) if r.name == PROXY_CLIENT]
    # (the flags step's name, where to report, the flag's value) for every master that sets the flag
    commands = {c.name: c.urn for c in by_type.get(REMOTE_COMMAND, [])}
    allowed_names = [
        (m.step, commands.get(m.step, component.urn), m.flags[ALLOWED_NAMES_FLAG])
        for component in by_type.get(APISERVER, [])
        for m in master_flags(component.props)
        if ALLOWED_NAMES_FLAG in m.flags
    ]
    if not requests and not certs and not allowed_names:
        return  # nothing of the aggregation layer in this stack (e.g. an empty or unrelated stack)
    if not requests:
        report_violation(
            f"no tls CertRequest named '{PROXY_CLIENT}' in the stack: cannot tell which common name the "
            f"proxy-client certificate has; name the proxy client's CertRequest '{PROXY_CLIENT}'.",
            None,
        )
        return
    names: dict[str, str] = {}
    for req in requests:
        cn = get(req.props, "subject", "commonName")
        if isinstance(cn, str) and cn:
            names[req.name] = cn
        elif not is_unknown(cn):
            report_violation(f"proxy-client CertRequest '{req.name}' has no subject.commonName.", req.urn)
    if not names:
        return
    cn_text = ", ".join(f"'{cn}'" for cn in sorted(set(names.values())))

    for step, where, value in allowed_names:
        allowed = [n.strip() for n in value.strip("'\"").split(",") if n.strip()]
        if not allowed:
            report_violation(
                f"command '{step}' sets {ALLOWED_NAMES_FLAG} empty, which accepts ANY client "
                f"certificate signed by the requestheader CA; set it to the proxy-client CN {cn_text}.",
                where,
            )
            continue
        missing = sorted({cn for cn in names.values() if cn not in allowed})
        if missing:
            report_violation(
                f"proxy-client certificate CN {', '.join(repr(m) for m in missing)} is not in "
                f"{ALLOWED_NAMES_FLAG}={','.join(allowed)} set by command '{step}'; kube-apiserver "
                "would not be trusted by metrics-server ('x509: subject with cn=... is not in the allowed "
                "list'): make pki.proxyClientCommonName and the flag agree.",
                where,
            )
    if not allowed_names:
        report_violation(
            f"no command:remote:Command sets {ALLOWED_NAMES_FLAG} (expected in the flags of a master's flags "
            f"step, which {APISERVER} records as masters[].flags), so the proxy-client CN {cn_text} "
            "is not pinned on any apiserver.",
            None,
        )


# --- resource policies -----------------------------------------------------------------------------


def _insecure_kubelet_values(tokens: Iterable[Any]) -> list[str]:
    found = []
    for token in tokens:
        if not isinstance(token, str):
            continue
        if token == KUBELET_INSECURE_FLAG or (
            token.startswith(KUBELET_INSECURE_FLAG + "=")
            and token.split("=", 1)[1].strip().lower() not in ("false", "0")
        ):
            found.append(token)
    return found


def validate_no_kubelet_insecure_tls(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if not settings_from(args.get_config()).production:
        return
    hint = (
        "production stacks verify kubelet serving certificates: set metricsServer.kubeletCaCertPem (or "
        "metricsServer.kubeletCaCertFile) and drop metricsServer.kubeletInsecureTls"
    )
    if args.resource_type == DEPLOYMENT:
        containers = _items(get(args.props, "spec", "template", "spec", "containers"))
        containers += _items(get(args.props, "spec", "template", "spec", "initContainers"))
        for c in containers:
            bad = _insecure_kubelet_values(_items(get(c, "args")) + _items(get(c, "command")))
            if bad:
                report_violation(
                    f"container '{get(c, 'name', default='?')}' of Deployment '{args.name}' runs with "
                    f"{bad[0]}; {hint}.",
                    None,
                )
    elif args.resource_type == APISERVER:
        for m in master_flags(args.props):
            bad = _insecure_kubelet_values(f"{name}={value}" for name, value in m.flags.items())
            if bad:
                report_violation(f"command '{m.step}' passes {bad[0]} (create); {hint}.", None)


def validate_no_insecure_skip_tls_verify(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != API_SERVICE or not settings_from(args.get_config()).production:
        return
    if get(args.props, "spec", "insecureSkipTLSVerify") is True:
        report_violation(
            f"APIService '{args.name}' sets spec.insecureSkipTLSVerify: kube-apiserver would not verify "
            "metrics-server's serving certificate on a production stack; set spec.caBundle to the serving "
            "CA instead.",
            None,
        )


def validate_strong_keys(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != PRIVATE_KEY:
        return
    algorithm = get(args.props, "algorithm")
    if is_unknown(algorithm):
        return
    algorithm = str(algorithm or "").upper()
    if algorithm == "RSA":
        bits = get(args.props, "rsaBits", default=TLS_DEFAULT_RSA_BITS)
        if not is_unknown(bits) and int(bits) < 2048:
            report_violation(
                f"private key '{args.name}' is RSA {int(bits)} bits; use at least 2048 (pki.rsaBits).", None
            )
    elif algorithm == "ECDSA":
        curve = get(args.props, "ecdsaCurve", default=TLS_DEFAULT_ECDSA_CURVE)
        if not is_unknown(curve) and str(curve).replace("-", "").upper() not in STRONG_ECDSA_CURVES:
            report_violation(
                f"private key '{args.name}' is ECDSA {curve}; use P256 or stronger (pki.ecdsaCurve: P256 or "
                "P384).",
                None,
            )
    else:
        report_violation(
            f"private key '{args.name}' uses algorithm {algorithm or '(none)'}; use RSA (>= 2048 bits) or "
            "ECDSA (>= P-256), which every kube-apiserver and metrics-server build accepts.",
            None,
        )


def validate_leaf_validity(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == SELF_SIGNED_CERT and get(args.props, "isCaCertificate") is True:
        return  # CAs are bounded by their own config (pki.caValidityHours)
    if args.resource_type not in (LOCALLY_SIGNED_CERT, SELF_SIGNED_CERT):
        return
    hours = get(args.props, "validityPeriodHours")
    if hours is None or is_unknown(hours):
        return
    limit = settings_from(args.get_config()).max_leaf_validity_hours
    if int(hours) > limit:
        report_violation(
            f"certificate '{args.name}' is valid for {int(hours)} hours, above the {limit}-hour limit for leaf "
            f"certificates (policy config maxLeafValidityHours); lower pki.certValidityHours.",
            None,
        )


def validate_host_keys_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != REMOTE_COMMAND or not settings_from(args.get_config()).production:
        return
    connection = get(args.props, "connection")
    if is_unknown(connection):
        return
    host = get(connection, "host", default="?")
    host_key = get(connection, "hostKey")
    if not host_key and not is_unknown(host_key):
        report_violation(
            f"command '{args.name}' connects to {host} without connection.hostKey: on a production stack the "
            "proxy-client key would be sent to whoever answers on that address; set masters[].hostKey "
            "(`ssh-keyscan -t ed25519 <address>`).",
            None,
        )
    proxy = get(connection, "proxy")
    if proxy and not is_unknown(proxy):
        proxy_key = get(proxy, "hostKey")
        if not proxy_key and not is_unknown(proxy_key):
            report_violation(
                f"command '{args.name}' jumps through bastion {get(proxy, 'host', default='?')} without "
                "connection.proxy.hostKey; set ssh.bastion.hostKey on a production stack.",
                None,
            )


def _aggregator_ca_files(m: MasterFlags) -> set[str]:
    """Where this master's flags step puts the aggregator CA: <cert dir>/aggregator-ca.pem and the
    requestheader CA flag."""
    files = {posixpath.normpath(v) for n, v in m.flags.items() if n == contract.REQUESTHEADER_CLIENT_CA_FILE and v}
    if m.cert_dir:
        files.add(posixpath.normpath(posixpath.join(m.cert_dir, contract.CA_CERT_FILE)))
    return files


def _dangerous_flag(name: str, value: str, ca_files: set[str], denied: Sequence[str]) -> str | None:
    """Why setting `name=value` on kube-apiserver is refused, or None."""
    if name == "--client-ca-file" and value and posixpath.normpath(value) in ca_files:
        return (
            f"sets --client-ca-file={value}, the aggregator (requestheader) CA: every certificate that CA signs "
            "would log in to the apiserver directly as its CN and organizations (whoever holds the CA key, which "
            "sits in Pulumi state, could mint a system:masters certificate); keep --client-ca-file on the "
            "cluster CA and remove it from extraFlags"
        )
    if name == "--anonymous-auth" and value in _GO_TRUE:
        return (
            f"sets --anonymous-auth={value}: unauthenticated requests would reach the apiserver as "
            "system:anonymous; remove it from extraFlags (or set it to false)"
        )
    if name == "--authorization-mode" and any(m.strip().lower() == "alwaysallow" for m in value.split(",")):
        return (
            f"sets --authorization-mode={value}: AlwaysAllow lets every authenticated (and, with anonymous "
            "auth, every) request do anything; use Node,RBAC"
        )
    if name in denied:
        return f"sets {name}, a flag the policy config lists in deniedFlags; remove it from extraFlags"
    return None


def validate_no_dangerous_apiserver_flags(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """The extra kube-apiserver flags a master's flags step sets never open the apiserver: no aggregator CA as
    client CA, no anonymous auth, no AlwaysAllow, nothing the policy config denies (deniedFlags)."""
    if args.resource_type != APISERVER:
        return
    denied = [f for f in _items((args.get_config() or {}).get("deniedFlags")) if isinstance(f, str)]
    for m in master_flags(args.props):
        ca_files_of_master = _aggregator_ca_files(m)
        for name, value in m.flags.items():
            why = _dangerous_flag(name, value, ca_files_of_master, denied)
            if why:
                report_violation(f"command '{m.step}' {why} (apiserver.extraFlags / masters[].extraFlags).", None)


# --- the policies ----------------------------------------------------------------------------------

_PRODUCTION = {"type": "boolean", "description": "the stack is production (default: stack named prod/production)"}
_MAX_HOURS = {"type": "number", "minimum": 1, "default": DEFAULT_MAX_LEAF_VALIDITY_HOURS,
              "description": "the longest validity of a leaf certificate, in hours"}
_CLUSTER_CA = {"type": "string", "description": "PEM of the cluster CA (compare: must differ from the aggregator CA)"}

_DENIED_FLAGS = {"type": "array", "items": {"type": "string", "pattern": "^--[a-z0-9]+(-[a-z0-9]+)*$"},
                 "description": "kube-apiserver flags the program must never set (extraFlags)"}

# Which policy config keys each policy reads (pack_config.py writes exactly these).
CONFIG_KEYS: dict[str, dict[str, dict[str, Any]]] = {
    "aggregator-ca-not-cluster-ca": {"clusterCaCertPem": _CLUSTER_CA},
    "proxy-client-cert-accepted": {},
    "no-kubelet-insecure-tls-in-production": {"production": _PRODUCTION},
    "no-insecure-skip-tls-verify-in-production": {"production": _PRODUCTION},
    "strong-keys": {},
    "leaf-validity-bounded": {"maxLeafValidityHours": _MAX_HOURS},
    "host-keys-pinned-in-production": {"production": _PRODUCTION},
    "no-dangerous-apiserver-flags": {"deniedFlags": _DENIED_FLAGS},
}


def _schema(name: str) -> PolicyConfigSchema | None:
    props = CONFIG_KEYS[name]
    return PolicyConfigSchema(properties=dict(props)) if props else None


# (kind, name, description, validation), in the order of CONFIG_KEYS
_POLICIES: tuple[tuple[type[ResourceValidationPolicy] | type[StackValidationPolicy], str, str, Callable[..., None]], ...] = (
    (StackValidationPolicy, "aggregator-ca-not-cluster-ca",
     "The requestheader (aggregator) CA is not the cluster CA and signs the proxy-client cert.",
     validate_ca_not_cluster_ca),
    (StackValidationPolicy, "proxy-client-cert-accepted",
     "The proxy-client certificate has client_auth and its CN is in --requestheader-allowed-names.",
     validate_proxy_client_cert),
    (ResourceValidationPolicy, "no-kubelet-insecure-tls-in-production",
     "metrics-server verifies kubelet certificates on production stacks (no --kubelet-insecure-tls).",
     validate_no_kubelet_insecure_tls),
    (ResourceValidationPolicy, "no-insecure-skip-tls-verify-in-production",
     "The metrics APIService is verified with a caBundle on production stacks.",
     validate_no_insecure_skip_tls_verify),
    (ResourceValidationPolicy, "strong-keys", "Private keys are RSA >= 2048 bits or ECDSA >= P-256.",
     validate_strong_keys),
    (ResourceValidationPolicy, "leaf-validity-bounded",
     "Leaf certificates are valid for at most maxLeafValidityHours (default one year).",
     validate_leaf_validity),
    (ResourceValidationPolicy, "host-keys-pinned-in-production",
     "Every SSH connection to a master pins its host key on production stacks.",
     validate_host_keys_pinned),
    (ResourceValidationPolicy, "no-dangerous-apiserver-flags",
     "The extra flags set on kube-apiserver never make the aggregator CA a client CA, turn on "
     "anonymous auth or AlwaysAllow, or name a flag of deniedFlags.",
     validate_no_dangerous_apiserver_flags),
)


def build_policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [
        kind(name=name, description=description, validate=validate, enforcement_level=EnforcementLevel.MANDATORY,
             config_schema=_schema(name))
        for kind, name, description, validate in _POLICIES
    ]


def pack_config(
    *, production: bool, max_leaf_validity_hours: int | None = None, cluster_ca_cert_pem: str | None = None,
    denied_flags: Sequence[str] = DEFAULT_DENIED_FLAGS,
) -> dict[str, dict[str, Any]]:
    """The `--policy-pack-config` document for a stack: each policy gets exactly the keys it reads."""
    values: dict[str, Any] = {"production": production, "deniedFlags": sorted(set(denied_flags))}
    if max_leaf_validity_hours is not None:
        values["maxLeafValidityHours"] = max_leaf_validity_hours
    if cluster_ca_cert_pem:
        values["clusterCaCertPem"] = cluster_ca_cert_pem
    doc: dict[str, dict[str, Any]] = {}
    for name, keys in CONFIG_KEYS.items():
        entry: dict[str, Any] = {"enforcementLevel": "mandatory"}
        entry.update({k: values[k] for k in keys if k in values})
        doc[name] = entry
    return doc

