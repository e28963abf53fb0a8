"""The wording of stack config errors: one line per problem that names the key path, the bad value (never a
secret) and the fix.

    metrics-aggregation:masters[2].address: '10.0.0.300' is neither an IP address nor a DNS name;
        set it to the master's IPv4 or IPv6 address or its DNS name

components/config.py (the schema) raises `Problems` inside its validators and `ConfigError` to the program;
the texts they share with more than one check, and pydantic's own errors reworded, are here. The CA-file
texts live with the CA-file reader (components/ca_files.py), which the policy pack shares.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from components import ca_files, contract
from components.contract import NAMESPACE

if TYPE_CHECKING:
    from pydantic import ValidationError

ProblemItem = tuple[tuple[str | int, ...], Any, str]


class ConfigError(Exception):
    """The stack config is invalid; `problems` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"the stack config of {NAMESPACE} is invalid ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}); nothing was changed:\n  "
            + "\n  ".join(problems)
        )


class Problems(ValueError):
    """Raised inside validators: problems at paths relative to the model being validated."""

    def __init__(self, items: list[ProblemItem]):
        self.items = items
        super().__init__("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, _, m in items))


def problem(path: tuple[str | int, ...], value: Any, message: str) -> Problems:
    return Problems([(path, value, message)])


# --- texts of the validators -------------------------------------------------------------------------

# The value grammar (config.VALUE_CHARS) in words.
VALUE_CHARS_TEXT = "letters, digits and _ . , : / = @ + * ~ -"


def unsafe_value_message(what: str) -> str:
    return (
        f"is not usable as {what}: use one word of {VALUE_CHARS_TEXT} (no spaces, tabs, line breaks, "
        "quotes, '$', '`', '%', '\\', ';' or '#': it reaches the master as one word of its kube-apiserver "
        "config or of the host script's options, where the shell, systemd or YAML would split or interpret them)"
    )


# The kube-apiserver flags this program sets itself (components.contract.MANAGED_FLAGS), each with what to
# do instead of naming it in apiserver.extraFlags / masters[].extraFlags.
MANAGED_FLAG_ADVICE: dict[str, str] = {
    contract.REQUESTHEADER_CLIENT_CA_FILE: "it points at the aggregator CA this program writes into apiserver.certDir; "
    "set apiserver.certDir (or the master's layout) instead",
    contract.REQUESTHEADER_ALLOWED_NAMES: "it is the proxy-client certificate's CN; set pki.proxyClientCommonName instead",
    contract.REQUESTHEADER_EXTRA_HEADERS_PREFIX: "this program sets it to X-Remote-Extra-; remove it from extraFlags",
    contract.REQUESTHEADER_GROUP_HEADERS: "this program sets it to X-Remote-Group; remove it from extraFlags",
    contract.REQUESTHEADER_USERNAME_HEADERS: "this program sets it to X-Remote-User; remove it from extraFlags",
    contract.PROXY_CLIENT_CERT_FILE: "it points at the proxy-client certificate this program writes into "
    "apiserver.certDir; set apiserver.certDir (or the master's layout) instead",
    contract.PROXY_CLIENT_KEY_FILE: "it points at the proxy-client key this program writes into apiserver.certDir; "
    "set apiserver.certDir (or the master's layout) instead",
    contract.ENABLE_AGGREGATOR_ROUTING: "set apiserver.enableAggregatorRouting (true/false) instead",
}


def bad_flag_name(name: Any, flag_name: re.Pattern[str]) -> str:
    """What is wrong with an extraFlags key that is not a flag name (`flag_name`: the config's pattern)."""
    text = str(name)
    fix = "is not a kube-apiserver flag name; write it as --name (lowercase letters, digits and dashes)"
    if "=" in text:
        flag, _, value = text.partition("=")
        return f"{fix}, the value apart: '{flag}: {value}'"
    if not text.startswith("-") and flag_name.match(f"--{text}"):
        return f"{fix}, e.g. '--{text}'"
    if flag_name.match(text.lower()):
        return f"{fix}, e.g. '{text.lower()}'"
    return fix


EXISTING_CA_MISSING = {
    "certPem": "is required with pki.existingCa: set the CA certificate with `pulumi config set --path "
    "pki.existingCa.certPem < front-proxy-ca.crt`, or set pki.existingCa.certFile to its path",
    "keyPem": "is required with pki.existingCa: set the CA's private key as a secret with `pulumi config set "
    "--secret --path pki.existingCa.keyPem < front-proxy-ca.key`, or set pki.existingCa.keyFile to its path",
}

UNMANAGED_SETTING = (
    "is set but apiserver.manage is false, so this program sets no flag on the masters; "
    "add the flag to the apiserver's own config (kubeadm: ClusterConfiguration.apiServer.extraArgs), "
    "or set apiserver.manage: true"
)
UNMANAGED_KEY_OWNER = (
    "is set but apiserver.manage is false, so this program writes no key on the masters; "
    "remove it, or set apiserver.manage: true"
)
UNPINNED_HOST_KEY = (
    "is required: without it the program does not check whom it connects to, and sends the "
    "proxy-client key (and root commands) to whoever answers on {address}; pin the key with one "
    "line of `ssh-keyscan -t ed25519 {target}` without the host name, checked against the host's "
    "own /etc/ssh/ssh_host_ed25519_key.pub, or set ssh.insecureSkipHostKeyCheck: true where nobody "
    "can stand in for the host"
)


def readyz_not_local(host: str, master: str, address: str) -> str:
    return (
        f"points at {host}, which is not master {master} ({address}) itself: the rollout waits "
        "for the apiserver it just restarted, and a load balancer or another master would answer "
        "for it; use a loopback address, e.g. https://127.0.0.1:6443/readyz (or "
        "https://localhost:6443/readyz)"
    )


def existing_ca_is_cluster_ca(match: str, source: str) -> str:
    return (
        f"is the cluster CA ({match} as pki.{source}); kube-apiserver checks --requestheader-client-ca-file "
        "before --client-ca-file, so every client certificate of the cluster whose CN is not in "
        "--requestheader-allowed-names would be refused: give the aggregator/front-proxy CA (kubeadm: "
        "/etc/kubernetes/pki/front-proxy-ca.crt), or remove pki.existingCa to let the program create one"
    )


MASTERS_MISSING = (
    "(missing) is required; list the masters in rollout order, e.g. [{name: k8s-master1, address: 10.0.0.101}]"
)
NOT_YAML = "could not be read as YAML/JSON (its value is not shown: it may hold a secret); fix its YAML"


NOT_AN_ADDRESS = (
    "is neither an IP address nor a DNS name; set it to an IPv4 or IPv6 address (no brackets, no port) or a DNS name"
)

NOT_A_HOST_KEY = (
    "is not an SSH public host key; paste one line of `ssh-keyscan -t ed25519 <address>` "
    "without the host name, e.g. 'ssh-ed25519 AAAA...'"
)


def keyscan_target(address: str, port: int | None) -> str:
    """ssh-keyscan's arguments for a host: it asks port 22 unless told."""
    return f"-p {port} {address}" if port and port != 22 else address


def rsa_host_key(host: str, address: str, port: int | None) -> str:
    return (
        f"is an RSA key ({host}): pulumi-command offers only the pinned key's type, for RSA ssh-rsa (SHA-1), which "
        "OpenSSH 8.8 and later refuse, so every step would fail with \"no common algorithm for host key\"; pin the "
        f"host's ed25519 key instead: one line of `ssh-keyscan -t ed25519 {keyscan_target(address, port)}` without the "
        "host name, checked against the host's own /etc/ssh/ssh_host_ed25519_key.pub (or its ECDSA key, "
        "`ssh-keyscan -t ecdsa`)"
    )


NOT_A_CA_FILE_PATH = (
    "must be the path of a PEM file on the machine running pulumi (relative paths are relative to the project "
    "directory)"
)

BAD_MASTER_NAME = (
    "is not a usable master name; use 1-63 letters, digits, '.', '_' or '-', "
    "starting and ending with a letter or digit (it becomes part of resource names)"
)

EXTRA_FLAGS_NOT_A_MAPPING = (
    "must be a mapping of kube-apiserver flags to values, e.g. {--requestheader-uid-headers: X-Remote-Uid}"
)

def managed_flag(name: str) -> str:
    return f"is a flag this program manages itself; {MANAGED_FLAG_ADVICE[name]}"

FRACTION_FLAG_VALUE = "is a number with a fraction, which YAML may have changed (1.10 reads as 1.1); quote it, e.g. '0.001'"
NOT_A_FLAG_VALUE = "is not a flag value; quote it"

# pulumi-command dials a set agentSocketPath whatever it holds (it tests for presence, not for text), so an
# empty one fails every command with "dial unix: missing address", deletes included.
AGENT_SOCKET_PATH_BLANK = (
    "is empty, and pulumi-command would dial it as it is: every command would fail (\"dial unix: missing "
    "address\"), deletes included; set the agent's socket path, or remove the key "
    "(`pulumi config rm --path ssh.agentSocketPath`) to use ssh.privateKey and SSH_AUTH_SOCK"
)

SSH_KEY_MISSING = (
    "is missing; set it with `pulumi config set --secret --path ssh.privateKey --raw < "
    "~/.ssh/id_ed25519` (or set ssh.agentSocketPath to use an SSH agent)"
)

SSH_KEY_NOT_PEM = (
    "is not a PEM/OpenSSH private key; set the key file's contents with "
    "`pulumi config set --secret --path ssh.privateKey --raw < keyfile`"
)

EXISTING_CA_NOT_A_MAPPING = (
    "must be a mapping {certPem or certFile, keyPem or keyFile}; see pki.existingCa in the config reference, docs/config.md"
)

EXISTING_CA_UNKNOWN_KEY = "is not a known key of pki.existingCa; use certPem or certFile, and keyPem or keyFile"

def existing_ca_key_mismatch(cert_source: str, subject: str) -> str:
    return (
        f"does not match the certificate of pki.existingCa.{cert_source} ({subject}); give that CA certificate's "
        "own private key"
    )

# pki.caGeneration / pki.caRotation (docs/ca-rotation.md)
ROTATION_WITHOUT_GENERATION = (
    "is a stage of a rotation to a new CA generation, but pki.caGeneration is 1 (the first CA): to rotate, "
    "set pki.caGeneration to the current generation + 1 together with pki.caRotation: trust (docs/ca-rotation.md)"
)
ROTATION_WITH_EXISTING_CA = (
    "rotates the CA this program creates, but pki.existingCa gives a CA of your own, which the program cannot "
    "rotate: rotate that CA where it was made and point pki.existingCa at the new one, with the overlap done by "
    "hand (docs/ca-rotation.md, \"With pki.existingCa\"); or remove pki.existingCa first (the program then creates "
    "its own CA, generation 1). Remove pki.caGeneration and pki.caRotation"
)
ROTATION_UNMANAGED = (
    "rotates the CA on the masters, but apiserver.manage is false: the program writes nothing there. Remove "
    "pki.caGeneration and pki.caRotation, or set apiserver.manage: true"
)


CA_CN_EQUALS_PROXY_CN = (
    "equals proxyClientCommonName; the CA and the proxy-client certificate need "
    "different subjects (e.g. caCommonName: aggregator-ca, proxyClientCommonName: aggregator)"
)

def leaf_outlives_ca(ca_validity_hours: int) -> str:
    return (
        f"is longer than caValidityHours ({ca_validity_hours}); a leaf must not "
        "outlive its CA: lower certValidityHours or raise caValidityHours"
    )

def renewal_not_below_validity(cert_validity_hours: int) -> str:
    return (
        f"is not below certValidityHours ({cert_validity_hours}); the certificate "
        "would be renewed on every run: lower earlyRenewalHours"
    )

def unknown_usage(known: Iterable[str]) -> str:
    return f"is not a usage the tls provider knows (it would be dropped silently); use one of: {', '.join(sorted(known))}"

RENEW_NOW_NOT_TEXT = (
    "must be a non-empty string or a whole number, e.g. the date of the renewal (2026-12-02) or a counter; "
    "change it to renew the proxy-client certificate"
)

NO_CLIENT_AUTH = (
    "lacks client_auth; kube-apiserver presents this certificate as a client "
    "(metrics-server rejects it with 'incompatible key usage'): add client_auth"
)

BAD_CONTAINER_NAME = (
    "must be a container name (a DNS label: lowercase letters, digits and '-', at most 63), e.g. kube-apiserver"
)

BAD_KEY_OWNER = (
    "must be user:group, each a name (lowercase letters, digits, '_' and '-', starting with a letter "
    "or '_', at most 32) or a numeric id, e.g. kube:kube (the user kube-apiserver runs as, systemd's "
    "User=)"
)

def resolution_too_short(floor_seconds: int) -> str:
    return (
        f"must be a duration longer than {floor_seconds}s (metrics-server's kubelet "
        "request timeout; metrics-server exits at start otherwise), such as 15s or 1m"
    )

INSECURE_TLS_WITH_CA_FILE = (
    "is set together with kubeletCaCertFile; choose one: remove kubeletInsecureTls "
    "to verify kubelets with the CA in kubeletCaCertFile"
)

INSECURE_TLS_WITH_CA_PEM = (
    "is set together with kubeletCaCertPem; choose one: remove kubeletInsecureTls "
    "to verify kubelets with kubeletCaCertPem"
)

PORT_COLLIDES_WITH_KUBELET = (
    "collides with the kubelet when hostNetwork is true (bind: address already in "
    "use, metrics-server#1026); set metricsServer.containerPort to e.g. 4443"
)

# --- metricsServer: scheduling, image, resources, pod metadata, extra args (issue 14) ---

# The metrics-server flags this program sets itself (components.metrics_server.container_args), each with the
# setting to use instead of naming it in metricsServer.extraArgs.
METRICS_SERVER_OWN_ARGS: dict[str, str] = {
    "--secure-port": "set metricsServer.containerPort instead",
    "--cert-dir": "the program keeps its own (/tmp, a writable emptyDir); remove it from extraArgs",
    "--tls-cert-file": "metrics-server serves with the program's serving certificate (the APIService's caBundle "
    "trusts it); remove it from extraArgs",
    "--tls-private-key-file": "metrics-server serves with the program's serving certificate (the APIService's "
    "caBundle trusts it); remove it from extraArgs",
    "--kubelet-insecure-tls": "set metricsServer.kubeletInsecureTls: true instead",
    "--kubelet-certificate-authority": "set metricsServer.kubeletCaCertPem or metricsServer.kubeletCaCertFile instead",
    "--metric-resolution": "set metricsServer.metricResolution instead",
    "--kubelet-preferred-address-types": "set metricsServer.preferredAddressTypes instead",
    "--kubelet-use-node-status-port": "the program always sets it; remove it from extraArgs",
}


def own_arg(name: str) -> str:
    return f"is a flag this program sets itself; {METRICS_SERVER_OWN_ARGS[name]}"


EXTRA_ARGS_NOT_A_MAPPING = (
    "must be a mapping of metrics-server flags to values, e.g. {--kubelet-request-timeout: 5s, -v: 2}"
)
BAD_ARG_NAME = "is not a metrics-server flag name; write it as --name (lowercase letters, digits and dashes) or -v"
ARG_VALUE_NOT_ONE_LINE = "must be one line without control characters (it becomes one argument of metrics-server)"
ARG_VALUE_TYPE = "must be a string or a number (true or null: the flag alone)"


def same_arg(other: str) -> str:
    return f"is the same flag as {other!r}; keep one of them"


def request_timeout_too_long(resolution: str) -> str:
    return (
        f"must be a duration shorter than metricResolution ({resolution}): metrics-server exits at start "
        "otherwise; lower it (e.g. 5s) or raise metricsServer.metricResolution"
    )


NOT_A_GO_DURATION = "must be a duration such as 5s or 1m30s (metrics-server's --kubelet-request-timeout)"

NOT_A_DNS_SUBDOMAIN = (
    "must be a Kubernetes object name (a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit, at most 253)"
)
NOT_A_LABEL_KEY = (
    "is not a Kubernetes label key: [prefix/]name, the name at most 63 letters, digits, '-', '_' or '.' "
    "starting and ending with a letter or digit, the prefix a DNS subdomain (e.g. node-role.kubernetes.io/infra)"
)
NOT_A_LABEL_VALUE = (
    "is not a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', starting and ending "
    "with a letter or digit (or empty)"
)
NOT_AN_ANNOTATION_KEY = NOT_A_LABEL_KEY.replace("label key", "annotation key")
MAP_VALUE_NOT_TEXT = "must be a string; quote it"


def not_a_string_map(example: str) -> str:
    return f"must be a mapping of strings to strings, e.g. {example}"


def owned_pod_label(names: Iterable[str]) -> str:
    return (
        f"is a label this program sets on the pods ({', '.join(names)}; k8s-app is the Deployment's and the "
        "Service's selector); choose another key"
    )


def owned_pod_annotation(prefix: str) -> str:
    return (
        f"is an annotation this program sets on the pods (everything under {prefix}: the checksums that roll "
        "them when their certificates change); choose another key"
    )


DUPLICATE_PULL_SECRET = "is named twice; list each Secret once"
NOT_AN_IMAGE_DIGEST = (
    "must be an image digest: sha256: and 64 lowercase hex digits (the registry's digest of image:version)"
)

TOLERATION_EXISTS_WITH_VALUE = (
    "must be absent with operator Exists (it tolerates every value of the key); remove value, or set operator: Equal"
)
TOLERATION_EMPTY_KEY = (
    "must be Exists when key is empty (a toleration of every taint); set operator: Exists, or give a key"
)
TOLERATION_SECONDS_WITHOUT_NO_EXECUTE = (
    "applies only to effect NoExecute (how long the pod stays after such a taint); remove it, or set effect: NoExecute"
)

NOT_A_QUANTITY = "is not a Kubernetes quantity; write e.g. 100m or 0.5 (CPU), 200Mi or 1Gi (memory)"


def limit_below_request(name: str, request: str, source: str) -> str:
    return f"is below the {name} request ({request}, {source}); a limit must be at least its request: raise it"


def requests_with_node_count(node_count: int) -> str:
    return (
        f"is set together with nodeCount ({node_count}), which sizes the requests; remove one: nodeCount to keep "
        "these requests, or resources.requests to size them from nodeCount"
    )


PDB_NEEDS_ONE = "needs exactly one of minAvailable or maxUnavailable, e.g. {maxUnavailable: 1}"
PDB_BOTH = "is set together with minAvailable; a budget has exactly one of them: remove one"
NOT_INT_OR_PERCENT = "must be a whole number (unquoted) or a percentage such as 50%"


def pdb_blocks_drains(replicas: int, keeps: int) -> str:
    return (
        f"allows no disruption with replicas {replicas} (it keeps {keeps} of {replicas} pods available), so "
        "every node drain would block on it; use maxUnavailable: 1, raise metricsServer.replicas, or remove "
        "podDisruptionBudget"
    )


def pem_and_file(pem_key: str, file_key: str, noun: str) -> str:
    return f"is set together with {pem_key}; choose one: remove {pem_key} to read {noun} from the file, or remove {file_key}"

def restart_command_empty(index: int, master: str, layout: str) -> str:
    return (
        f"is empty but masters[{index}] ({master}) uses layout {layout}, which needs "
        "a restart command such as `systemctl restart kube-apiserver`"
    )

def existing_ca_expires_first(not_after: dt.datetime, proxy_end: dt.datetime, cert_validity_hours: int, fix: str) -> str:
    return (
        f"expires on {ca_files.when(not_after)}, {ca_files.span(proxy_end - not_after)} before the proxy-client "
        f"certificate would (now + pki.certValidityHours {cert_validity_hours} = {ca_files.when(proxy_end)}): {fix}"
    )


# --- formatting ------------------------------------------------------------------------------------


def key_path(loc: tuple[str | int, ...]) -> str:
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
UNKNOWN_KEY = (
    "is not a known key (its value is not shown: a misspelt key may hold a secret); check its spelling against "
    "the config reference in docs/config.md"
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
    "model_type": lambda e: "must be a mapping of keys (see the config reference in docs/config.md)",
    "tuple_type": lambda e: "must be a list",
    "dict_type": lambda e: "must be a mapping",
}


def messages(err: ValidationError) -> list[str]:
    """One line per problem of a failed validation: our own (`Problems`) as raised, pydantic's reworded."""
    lines: list[str] = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, Problems):
            for rel, value, message in cause.items:
                lines.append(f"{key_path(loc + rel)}: {_show(_shown(loc + rel, value, holders=False))} {message}")
            continue
        if e["type"] == "extra_forbidden":
            lines.append(f"{key_path(loc)}: {UNKNOWN_KEY}")
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
        lines.append(f"{key_path(loc)}: {_show(value)} {message}")
    return lines
