"""How this program reaches the cluster: the `kubernetes:*` stack config, for MetricsServer's own
pulumi-kubernetes provider and for the read-only look at the cluster before anything is registered.

MetricsServer uses an explicit provider (upsertExistingObjects, see docs/kubernetes-provider.md). An
explicit provider does not read `kubernetes:*` stack config the way the default provider does, so
every key the default provider would get is passed through here unchanged: the two configs then
differ only in what adoption needs, and pulumi-kubernetes' DiffConfig plans no replacement for
stacks whose objects were made with the default provider.

`endpoint()` resolves the same kubeconfig the provider would use (the `kubernetes:kubeconfig` path or
contents, else $KUBECONFIG, else ~/.kube/config; `kubernetes:context` / `kubernetes:cluster`) into an
`Endpoint`, and `get_json()` is a small HTTPS GET with it: standard library only, a direct connection
(no proxy from the environment), bounded by a timeout. Credentials stay in memory; client keys are
handed to `ssl` through a 0600 file in a private temporary directory that is removed at once.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from components.config import ConfigError

PROVIDER_NAMESPACE = "kubernetes"

# The pulumi-kubernetes 4.34 provider config keys (schema `config.variables`), by how their value is read.
STRING_KEYS = ("kubeconfig", "context", "cluster", "namespace", "clusterIdentifier", "renderYamlToDirectory")
BOOL_KEYS = (
    "deleteUnreachable", "skipUpdateUnreachable", "enableConfigMapMutable", "enableSecretMutable",
    "suppressDeprecationWarnings", "suppressHelmHookWarnings", "alwaysRender", "enablePatchForce",
    "enableServerSideApply", "upsertExistingObjects",
)
OBJECT_KEYS = ("kubeClientSettings", "helmReleaseSettings")
# What adoption of an existing metrics-server needs; the stack may not turn these off.
REQUIRED = {"enableServerSideApply": True, "upsertExistingObjects": True}

EXEC_TIMEOUT_SECONDS = 30
HTTP_TIMEOUT_SECONDS = 10


class KubeAccessError(Exception):
    """The cluster cannot be read with this kubeconfig (a message without any credential)."""


# --- the `kubernetes:*` stack config --------------------------------------------------------------


@dataclass(frozen=True)
class KubeSettings:
    """The `kubernetes:*` stack config keys the provider knows, by camelCase name; `secret` names the
    keys that are secret in the stack (they stay secret in the provider's inputs)."""

    values: Mapping[str, Any] = field(default_factory=dict)
    secret: frozenset[str] = frozenset()

    def get(self, key: str) -> Any:
        return self.values.get(key)


def read_settings(cfg: Any = None, is_secret: Callable[[str], bool] | None = None) -> KubeSettings:
    """The `kubernetes:*` keys from the stack (pulumi.Config); a value of the wrong type, or a stack
    that turns off what adoption needs, is a ConfigError naming the key."""
    import pulumi

    cfg = cfg or pulumi.Config(PROVIDER_NAMESPACE)
    is_secret = is_secret or _is_config_secret
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key in (*STRING_KEYS, *BOOL_KEYS, *OBJECT_KEYS):
        try:
            if key in BOOL_KEYS:
                value = cfg.get_bool(key)
            elif key in OBJECT_KEYS:
                value = cfg.get_object(key)
            else:
                value = cfg.get(key)
        except Exception as exc:  # ConfigTypeError and malformed JSON
            problems.append(f"{PROVIDER_NAMESPACE}:{key}: could not be read ({type(exc).__name__}); fix its value")
            continue
        if value is not None:
            values[key] = value
    for key, needed in REQUIRED.items():
        if key in values and values[key] != needed:
            problems.append(
                f"{PROVIDER_NAMESPACE}:{key}: {str(values[key]).lower()} cannot be used: metrics-server's objects "
                f"are created and adopted with Server-Side Apply and upsertExistingObjects on this program's own "
                f"provider; remove the key"
            )
    if problems:
        raise ConfigError(problems)
    secret = {k for k in values if is_secret(f"{PROVIDER_NAMESPACE}:{k}")}
    if "\n" in str(values.get("kubeconfig", "")):
        secret.add("kubeconfig")  # kubeconfig text may hold keys and tokens, whether the stack said secret or not
    return KubeSettings(values=values, secret=frozenset(secret))


def _is_config_secret(full_key: str) -> bool:
    """Secret in the stack: the SDK's own set (mocks, automation) or the engine's PULUMI_CONFIG_SECRET_KEYS."""
    from pulumi.runtime.config import get_config_secret_keys_env, is_config_secret

    return is_config_secret(full_key) or full_key in get_config_secret_keys_env()


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def provider_args(settings: KubeSettings) -> dict[str, Any]:
    """Keyword arguments for k8s.Provider: the stack's keys as the default provider gets them, plus
    Server-Side Apply and upsertExistingObjects (4.29+: create adopts an existing object instead of
    failing with AlreadyExists; 4.25 ignores the key and always upserts under SSA)."""
    import pulumi

    args: dict[str, Any] = {}
    for key, value in settings.values.items():
        args[_snake(key)] = pulumi.Output.secret(value) if key in settings.secret else value
    for key, value in REQUIRED.items():
        args[_snake(key)] = value
    # Unset, the SDK would fill in the program's $KUBECONFIG, and the provider reads that string as one
    # path or as kubeconfig text (a `a:b` list then fails). "" is the provider's "not set": client-go's
    # loading rules, exactly what the default provider does without `kubernetes:kubeconfig`.
    args.setdefault("kubeconfig", "")
    return args


# --- kubeconfig -> Endpoint ------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One API server and how to authenticate to it. `where` names the kubeconfig and context (never a
    credential) for messages."""

    server: str
    where: str
    ca_pem: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    basic: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Doc:
    """One parsed kubeconfig and the directory its relative paths are relative to."""

    data: dict[str, Any]
    base: Path
    name: str


def _parse_doc(text: str, base: Path, name: str) -> _Doc:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeAccessError(f"{name} is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise KubeAccessError(f"{name} is neither a readable kubeconfig file nor kubeconfig YAML")
    return _Doc(data, base, name)


def _docs(kubeconfig: str | None, env: Mapping[str, str], home: Path) -> list[_Doc]:
    """The kubeconfig documents in client-go's precedence order.

    `kubernetes:kubeconfig` is a path or the contents (the provider's rule: an existing path is read;
    its relative paths then resolve against the working directory, as in the provider, which parses
    the contents without a file location). Otherwise $KUBECONFIG (a list) or ~/.kube/config, whose
    relative paths resolve against each file's directory (client-go's loading rules)."""
    if kubeconfig:
        path = Path(kubeconfig).expanduser() if kubeconfig.startswith("~") else Path(kubeconfig)
        if "\n" not in kubeconfig and path.is_file():
            try:
                text = path.read_text()
            except OSError as exc:
                raise KubeAccessError(f"kubernetes:kubeconfig: cannot read {path} ({exc.strerror})") from None
            return [_parse_doc(text, Path.cwd(), f"kubernetes:kubeconfig ({path})")]
        return [_parse_doc(kubeconfig, Path.cwd(), "kubernetes:kubeconfig (inline)")]
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    paths = [Path(p) for p in listed] if listed else [home / ".kube" / "config"]
    docs = []
    for p in paths:
        if p.is_file():
            try:
                docs.append(_parse_doc(p.read_text(), p.parent.resolve(), str(p)))
            except OSError as exc:
                raise KubeAccessError(f"cannot read kubeconfig {p} ({exc.strerror})") from None
    if not docs:
        where = f"$KUBECONFIG ({env['KUBECONFIG']})" if listed else str(paths[0])
        raise KubeAccessError(f"no kubeconfig: set kubernetes:kubeconfig, or provide {where}")
    return docs


def _named(docs: list[_Doc], section: str, name: str) -> tuple[dict[str, Any], _Doc] | None:
    """The first entry `name` of `section` (clusters, contexts, users): client-go's merge keeps the first."""
    for doc in docs:
        for entry in doc.data.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                key = section[:-1]  # clusters -> cluster
                return (entry.get(key) or {}), doc
    return None


def _pem(entry: Mapping[str, Any], key: str, doc: _Doc, what: str) -> bytes | None:
    """`<key>-data` (base64) or the file `<key>` (relative to the document's base)."""
    data = entry.get(f"{key}-data")
    if data and not isinstance(data, str):
        raise KubeAccessError(f"{doc.name}: {what} {key}-data must be a base64 string")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            raise KubeAccessError(f"{doc.name}: {what} {key}-data is not base64") from None
    path = entry.get(key)
    if path and not isinstance(path, str):
        raise KubeAccessError(f"{doc.name}: {what} {key} must be a file path")
    if path:
        full = doc.base / Path(path).expanduser()
        try:
            return full.read_bytes()
        except OSError as exc:
            raise KubeAccessError(f"{doc.name}: {what} {key} {full}: {exc.strerror}") from None
    return None


def endpoint(
    kubeconfig: str | None = None,
    context: str | None = None,
    cluster: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> Endpoint:
    """The API server and credentials the provider would use with this config."""
    env = os.environ if env is None else env
    docs = _docs(kubeconfig, env, home or Path.home())
    ctx_name = context or next((d.data.get("current-context") for d in docs if d.data.get("current-context")), None)
    if not ctx_name:
        raise KubeAccessError(f"{docs[0].name} has no current-context; set kubernetes:context")
    found = _named(docs, "contexts", ctx_name)
    if found is None:
        raise KubeAccessError(f"{docs[0].name} has no context {ctx_name!r}")
    ctx, _ = found
    cluster_name = cluster or ctx.get("cluster")
    found_cluster = _named(docs, "clusters", str(cluster_name))
    if found_cluster is None or not found_cluster[0].get("server"):
        raise KubeAccessError(f"{docs[0].name}: context {ctx_name!r} names no cluster with a server")
    cl, cl_doc = found_cluster
    where = f"{cl_doc.name}, context {ctx_name!r}"
    found_user = _named(docs, "users", str(ctx.get("user"))) if ctx.get("user") else None
    user, user_doc = found_user if found_user else ({}, docs[0])
    creds = _credentials(user, user_doc, env, run)
    return Endpoint(
        server=str(cl["server"]).rstrip("/"),
        where=where,
        ca_pem=_pem(cl, "certificate-authority", cl_doc, "cluster"),
        insecure=bool(cl.get("insecure-skip-tls-verify")),
        tls_server_name=cl.get("tls-server-name"),
        **creds,
    )


def _credentials(
    user: Mapping[str, Any], doc: _Doc, env: Mapping[str, str], run: Callable[..., subprocess.CompletedProcess]
) -> dict[str, Any]:
    """Client certificate, bearer token or basic auth of a kubeconfig user (exec plugins run here)."""
    if user.get("exec"):
        return _exec_credentials(user["exec"], doc, env, run)
    token = user.get("token")
    if not token and user.get("tokenFile"):
        try:
            token = (doc.base / user["tokenFile"]).read_text().strip()
        except OSError as exc:
            raise KubeAccessError(f"{doc.name}: user tokenFile: {exc.strerror}") from None
    provider = user.get("auth-provider") or {}
    if not token and provider:
        token = (provider.get("config") or {}).get("id-token")
        if not token:
            raise KubeAccessError(
                f"{doc.name}: auth-provider {provider.get('name')!r} without an id-token is not supported here"
            )
    basic = (str(user["username"]), str(user.get("password", ""))) if user.get("username") else None
    return {
        "cert_pem": _pem(user, "client-certificate", doc, "user"),
        "key_pem": _pem(user, "client-key", doc, "user"),
        "token": token or None,
        "basic": basic,
    }


def _exec_credentials(
    spec: Mapping[str, Any], doc: _Doc, env: Mapping[str, str], run: Callable[..., subprocess.CompletedProcess]
) -> dict[str, Any]:
    """Run a client-go credential plugin (ExecCredential) once, non-interactively."""
    api_version = spec.get("apiVersion", "client.authentication.k8s.io/v1")
    child_env = dict(env)
    for e in spec.get("env") or []:
        if not isinstance(e, Mapping) or "name" not in e or "value" not in e:
            raise KubeAccessError(f"{doc.name}: user exec env entries need a name and a value, got {sorted(e) if isinstance(e, Mapping) else type(e).__name__}")
        child_env[str(e["name"])] = str(e["value"])
    child_env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    command = str(spec.get("command", ""))
    if "/" in command and not Path(command).is_absolute():
        command = str(doc.base / command)  # client-go: a relative path is relative to the kubeconfig
    try:
        done = run(
            [command, *map(str, spec.get("args") or [])], env=child_env, capture_output=True,
            stdin=subprocess.DEVNULL, timeout=EXEC_TIMEOUT_SECONDS, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubeAccessError(f"{doc.name}: exec credential plugin {command!r} failed: {type(exc).__name__}") from None
    if done.returncode != 0:
        raise KubeAccessError(f"{doc.name}: exec credential plugin {command!r} exited {done.returncode}")
    try:
        status = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError):
        raise KubeAccessError(f"{doc.name}: exec credential plugin {command!r} printed no ExecCredential") from None
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    return {
        "cert_pem": cert.encode() if cert else None,
        "key_pem": key.encode() if key else None,
        "token": status.get("token"),
        "basic": None,
    }


# --- GET ---------------------------------------------------------------------------------------------


class HttpError(KubeAccessError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _ssl_context(ep: Endpoint) -> ssl.SSLContext:
    if ep.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ep.ca_pem:
        try:
            ctx = ssl.create_default_context(cadata=ep.ca_pem.decode("ascii", errors="replace"))
        except ssl.SSLError:
            raise KubeAccessError(f"{ep.where}: the cluster's certificate-authority is not a PEM certificate") from None
    else:
        ctx = ssl.create_default_context()
    if ep.cert_pem and ep.key_pem:
        with tempfile.TemporaryDirectory(prefix="metrics-aggregation-") as tmp:
            cert, key = Path(tmp) / "client.crt", Path(tmp) / "client.key"
            for path, data in ((cert, ep.cert_pem), (key, ep.key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            try:
                ctx.load_cert_chain(str(cert), str(key))
            except ssl.SSLError:
                raise KubeAccessError(f"{ep.where}: the user's client certificate and key do not load") from None
    return ctx


def _headers(ep: Endpoint) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "metrics-aggregation-preflight"}
    if ep.token:
        headers["Authorization"] = f"Bearer {ep.token}"
    elif ep.basic:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(ep.basic).encode()).decode()
    return headers


class _Https(http.client.HTTPSConnection):
    """HTTPS to host:port with the SNI / verified name of the kubeconfig's tls-server-name, and no
    tunnel: the connection is direct whatever HTTPS_PROXY says."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext, server_name: str, timeout: float):
        super().__init__(host, port, context=context, timeout=timeout)
        self._server_name = server_name

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self._server_name)  # type: ignore[attr-defined]


def get_json(ep: Endpoint, path: str, timeout: float = HTTP_TIMEOUT_SECONDS) -> dict[str, Any] | None:
    """GET `path` (JSON); None for 404. A direct connection: proxies from the environment are not used.
    Raises HttpError for other statuses and OSError / ssl.SSLError when the server cannot be reached."""
    return request_json(ep, "GET", path, timeout=timeout)


def request_json(ep: Endpoint, method: str, path: str, body: dict[str, Any] | None = None, *,
                 content_type: str = "application/json",
                 timeout: float = HTTP_TIMEOUT_SECONDS) -> dict[str, Any] | None:
    """`method` on `path` with a JSON `body` (a PATCH names its patch type in `content_type`); the JSON
    answer, None for 404. HttpError for other statuses than 200/201 (409: a stale resourceVersion)."""
    url = urlsplit(ep.server)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise KubeAccessError(f"{ep.where}: server {ep.server!r} is not an http(s) URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        server_name = ep.tls_server_name or url.hostname
        conn = _Https(url.hostname, port, context=_ssl_context(ep), server_name=server_name, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(url.hostname, port, timeout=timeout)
    headers = _headers(ep)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = content_type
    try:
        conn.request(method, url.path.rstrip("/") + path, body=data, headers=headers)
        response = conn.getresponse()
        status, text = response.status, response.read().decode(errors="replace")
    finally:
        conn.close()
    if status == 404:
        return None
    if status not in (200, 201):
        try:
            message = json.loads(text).get("message") or text[:200]
        except (ValueError, AttributeError):
            message = text[:200]
        raise HttpError(status, str(message))
    return json.loads(text)
