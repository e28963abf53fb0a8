"""A sandbox brought into the state that people leave behind before they meet this program (issue 10),
the way a person gets there: certificates made on the operator's machine and copied to every master,
flags added to the env file by a plain text edit, each apiserver restarted, metrics-server applied with
kubectl. No line of the program is used.

    pristine = snapshot(sb)                          # before anything (sandbox/cluster.py's masters)
    hm = build(sb, "guide", "apply", pristine)       # the classic manual guide + `kubectl apply`
    hm = build(sb, "kubeadm", "create", pristine)    # kubeadm's front-proxy files and flags + `kubectl create`
    hm = build(sb, "guide", "helm", pristine)        # the guide's masters + a Helm-installed metrics-server
    differences(hm.snapshot, snapshot(sb))           # [] = every watched file byte for byte as it was

Flavours of the masters:
  guide    cfssl-style aggregator CA and proxy cert (RSA 2048, the SAME DN for both: CN=aggregator, O=k8s,
           OU=System, C=CN, ST/L=BeiJing; the leaf with server+client auth, as the guide's `kubernetes`
           profile signs it) as /etc/kubernetes/ssl/aggregator-ca.pem (0644), aggregator.pem (0644),
           aggregator-key.pem (0600), and the guide's 8 flags appended to KUBE_APISERVER_OPTS;
  kubeadm  kubeadm's front-proxy CA and client (CN=front-proxy-ca / front-proxy-client, client auth only)
           as /etc/kubernetes/pki/front-proxy-ca.crt/.key and front-proxy-client.crt/.key, and kubeadm's
           7 flags, plus --enable-aggregator-routing=true: the sandbox has no kube-proxy, so an apiserver
           reaches metrics-server only by its endpoint address (a real kubeadm cluster has kube-proxy and
           does not need it).
Ways metrics-server gets there: `apply` (kubectl apply, client-side), `apply-server-side`, `create`
(data/metrics-server-upstream.yaml), or `helm` (data/metrics-server-helm.yaml created with Helm's field
manager, plus the release Secret `helm install` keeps).

Master paths are the paths inside the master's mount namespace (/etc/kubernetes/...); `host_path` maps
them to the directories sandbox/cluster.py bind-mounts there (MOUNTS), which is where this module reads
and writes them (as root, like the person with sudo on each master).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.kube import Api, ApiError
from sandbox.cluster import ENV_FILE, MASTERS, MOUNTS, NODES, Sandbox, SandboxError, wait_for

DATA = Path(__file__).resolve().parent / "data"
UPSTREAM_MANIFEST = DATA / "metrics-server-upstream.yaml"
HELM_MANIFEST = DATA / "metrics-server-helm.yaml"
HELM_RELEASE = "kube-metrics"
HELM_CHART, HELM_CHART_VERSION, HELM_APP_VERSION = "metrics-server", "3.13.1", "0.8.1"
NAMESPACE = "kube-system"
METRICS_NODES = "/apis/metrics.k8s.io/v1beta1/nodes"
APISERVICE = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/metrics-server"
ENV_VAR = "KUBE_APISERVER_OPTS"

# ---- the classic guide: cfssl, /etc/kubernetes/ssl
GUIDE_CN = "aggregator"
# the guide's CSR "names" (cfssl puts them in this order: C, ST, L, O, OU, then CN)
GUIDE_NAMES = ((NameOID.COUNTRY_NAME, "CN"), (NameOID.STATE_OR_PROVINCE_NAME, "BeiJing"),
               (NameOID.LOCALITY_NAME, "BeiJing"), (NameOID.ORGANIZATION_NAME, "k8s"),
               (NameOID.ORGANIZATIONAL_UNIT_NAME, "System"))
GUIDE_EXPIRY = dt.timedelta(hours=87600)  # ca-config.json's profile and the CA csr's "ca": {"expiry"}
CFSSL_BACKDATE = dt.timedelta(minutes=5)  # cfssl backdates notBefore for clock skew
SSL_DIR = "/etc/kubernetes/ssl"
GUIDE_CA, GUIDE_CERT, GUIDE_KEY = (f"{SSL_DIR}/aggregator-ca.pem", f"{SSL_DIR}/aggregator.pem",
                                   f"{SSL_DIR}/aggregator-key.pem")
GUIDE_FLAGS = (
    f"--requestheader-client-ca-file={GUIDE_CA}",
    f"--requestheader-allowed-names={GUIDE_CN}",
    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
    "--requestheader-group-headers=X-Remote-Group",
    "--requestheader-username-headers=X-Remote-User",
    f"--proxy-client-cert-file={GUIDE_CERT}",
    f"--proxy-client-key-file={GUIDE_KEY}",
    "--enable-aggregator-routing=true",
)

# ---- kubeadm: the front-proxy CA in /etc/kubernetes/pki
KUBEADM_DIR = "/etc/kubernetes/pki"
KUBEADM_CA, KUBEADM_CA_KEY = f"{KUBEADM_DIR}/front-proxy-ca.crt", f"{KUBEADM_DIR}/front-proxy-ca.key"
KUBEADM_CERT, KUBEADM_KEY = f"{KUBEADM_DIR}/front-proxy-client.crt", f"{KUBEADM_DIR}/front-proxy-client.key"
KUBEADM_CA_CN, KUBEADM_CLIENT_CN = "front-proxy-ca", "front-proxy-client"
KUBEADM_CA_VALIDITY, KUBEADM_CERT_VALIDITY = dt.timedelta(days=3650), dt.timedelta(days=365)
KUBEADM_FLAGS = (
    f"--requestheader-client-ca-file={KUBEADM_CA}",
    f"--requestheader-allowed-names={KUBEADM_CLIENT_CN}",
    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
    "--requestheader-group-headers=X-Remote-Group",
    "--requestheader-username-headers=X-Remote-User",
    f"--proxy-client-cert-file={KUBEADM_CERT}",
    f"--proxy-client-key-file={KUBEADM_KEY}",
)
SANDBOX_ROUTING_FLAG = "--enable-aggregator-routing=true"  # the sandbox has no kube-proxy (module doc)

# what `snapshot` records on every master: "byte for byte as before" covers these
WATCHED_DIRS = ("/etc/kubernetes", SSL_DIR, KUBEADM_DIR)
WATCHED_FILES = (ENV_FILE, GUIDE_CA, GUIDE_CERT, GUIDE_KEY, KUBEADM_CA, KUBEADM_CA_KEY, KUBEADM_CERT, KUBEADM_KEY)

APPLY = {"apply": ("apply",), "apply-server-side": ("apply", "--server-side"), "create": ("create",),
         "helm": ("create", "--field-manager=helm")}  # Helm 3 creates its objects as field manager "helm"
PLURALS = {"ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
           "RoleBinding": "rolebindings", "Service": "services", "Deployment": "deployments",
           "APIService": "apiservices", "Secret": "secrets", "ConfigMap": "configmaps"}
# what the program adds beside the upstream objects (components/metrics_server.py), removed between cases
PROGRAM_EXTRAS = {"Secret/metrics-server-serving-cert": f"/api/v1/namespaces/{NAMESPACE}/secrets/metrics-server-serving-cert",
                  "ConfigMap/metrics-server-kubelet-ca": f"/api/v1/namespaces/{NAMESPACE}/configmaps/metrics-server-kubelet-ca"}


class HandMadeError(SandboxError):
    pass


# ------------------------------------------------------------------------------------------ certificates
@dataclass(frozen=True)
class Bundle:
    """A CA and the proxy-client cert it signed, as PEM bytes the way the tool wrote them."""

    ca_cert_pem: bytes
    ca_key_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def ca_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_cert_pem)

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _rsa_2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pkcs1_pem(key: rsa.RSAPrivateKey) -> bytes:
    """`-----BEGIN RSA PRIVATE KEY-----`: what cfssljson and kubeadm write for an RSA key."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _serial() -> int:
    return x509.random_serial_number()


def _sign_ca(name: x509.Name, key: rsa.RSAPrivateKey, not_before: dt.datetime, not_after: dt.datetime,
             digital_signature: bool) -> x509.Certificate:
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(_serial()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                                         key_encipherment=digital_signature, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=not digital_signature,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _sign_leaf(name: x509.Name, key: rsa.RSAPrivateKey, ca: x509.Certificate, ca_key: rsa.RSAPrivateKey,
               not_before: dt.datetime, not_after: dt.datetime, usages: list) -> x509.Certificate:
    return (x509.CertificateBuilder().subject_name(name).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(_serial()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def guide_bundle(now: dt.datetime | None = None) -> Bundle:
    """`cfssl gencert -initca aggregator-ca-csr.json` then `cfssl gencert -ca=aggregator-ca.pem
    -profile=kubernetes aggregator-csr.json`: both CSRs carry the same names and CN, so CA and leaf have
    the same DN; the leaf is capped at the CA's notAfter (it is signed a moment later with the same expiry)."""
    now = now or dt.datetime.now(dt.UTC)
    name = x509.Name([*(x509.NameAttribute(oid, v) for oid, v in GUIDE_NAMES),
                      x509.NameAttribute(NameOID.COMMON_NAME, GUIDE_CN)])
    ca_key, key = _rsa_2048(), _rsa_2048()
    ca = _sign_ca(name, ca_key, now - CFSSL_BACKDATE, now + GUIDE_EXPIRY, digital_signature=False)
    leaf = _sign_leaf(name, key, ca, ca_key, now - CFSSL_BACKDATE, ca.not_valid_after_utc,
                      [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    return Bundle(_pem(ca), _pkcs1_pem(ca_key), _pem(leaf), _pkcs1_pem(key))


def kubeadm_bundle(now: dt.datetime | None = None) -> Bundle:
    """kubeadm's `certs front-proxy-ca` and `certs front-proxy-client` phases (no O, client auth only)."""
    now = now or dt.datetime.now(dt.UTC)
    ca_key, key = _rsa_2048(), _rsa_2048()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, KUBEADM_CA_CN)])
    ca = _sign_ca(ca_name, ca_key, now, now + KUBEADM_CA_VALIDITY, digital_signature=True)
    leaf = _sign_leaf(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, KUBEADM_CLIENT_CN)]), key, ca, ca_key,
                      now, now + KUBEADM_CERT_VALIDITY, [ExtendedKeyUsageOID.CLIENT_AUTH])
    return Bundle(_pem(ca), _pkcs1_pem(ca_key), _pem(leaf), _pkcs1_pem(key))


# ------------------------------------------------------------------------------------------ master files
def host_path(sb: Sandbox, master: str, inside: str) -> Path:
    """Where the runner sees a path of the master's mount namespace (sandbox/cluster.py MOUNTS)."""
    for mount, sub in MOUNTS.items():
        if inside == mount or inside.startswith(mount + "/"):
            return sb.master_dir(master) / sub / inside[len(mount):].lstrip("/")
    raise ValueError(f"{inside} is not under a master's private mount ({', '.join(MOUNTS)})")


def install(sb: Sandbox, master: str, inside: str, data: bytes, mode: int) -> None:
    """`install -D -m MODE` by root: the directory made when missing (0755), the file root:root."""
    p = host_path(sb, master, inside)
    p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    p.write_bytes(data)
    os.chmod(p, mode)
    os.chown(p, 0, 0)


def add_flags(text: str, flags: Iterable[str], var: str = ENV_VAR) -> str:
    """The person's edit: each flag on a continuation line of its own, before the value's closing quote."""
    opening = f'{var}="'
    start = text.find(opening)
    if start < 0:
        raise HandMadeError(f"no {opening}... in the env file")
    end = text.index('"', start + len(opening))
    return text[:end] + "".join(f" \\\n{f}" for f in flags) + text[end:]


def drop_flag(text: str, name: str) -> str:
    """Remove the continuation line holding `name=...` (a flag someone forgot, or removed by hand)."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.lstrip().startswith(f"{name}=")]
    if len(hits) != 1:
        raise HandMadeError(f"{name}: expected one line in the env file, found {len(hits)}")
    i = hits[0]
    removed = lines.pop(i)
    if not removed.rstrip("\n").endswith("\\"):  # the last flag carried the closing quote: the line above takes it
        lines[i - 1] = lines[i - 1].rstrip("\n").removesuffix("\\").rstrip() + removed.rstrip("\n").rsplit('"', 1)[1] \
            + '"\n'
    return "".join(lines)


def edit_env_file(sb: Sandbox, master: str, edit: Callable[[str], str]) -> None:
    """A text editor on the master's env file: the same file (inode, mode, owner), new contents."""
    p = host_path(sb, master, ENV_FILE)
    p.write_text(edit(p.read_text()))


def generation(sb: Sandbox, master: str) -> int:
    """How many times the master's supervisor has started kube-apiserver (lab/supervisor.py)."""
    return int((sb.master_dir(master) / "generation").read_text())


def generations(sb: Sandbox) -> dict[str, int]:
    return {m: generation(sb, m) for m in MASTERS}


def restart_apiserver(sb: Sandbox, master: str, timeout: float = 150) -> None:
    """`systemctl restart kube-apiserver` on the master (the sandbox's apiserverctl), then /readyz == ok."""
    ctl = host_path(sb, master, "/usr/local/sbin/apiserverctl")
    p = subprocess.run([str(ctl), "restart"], capture_output=True, text=True, timeout=90)
    if p.returncode != 0:
        raise HandMadeError(f"{master}: apiserverctl restart -> {p.returncode}: {p.stderr.strip()}")
    api = sb.master_api(master)
    try:
        wait_for(api.ok, f"{master}: kube-apiserver /readyz after the restart", timeout, 0.3, error=HandMadeError)
    except HandMadeError as e:
        tail = (sb.master_dir(master) / "kube-apiserver.log").read_text(errors="replace")[-2500:]
        raise HandMadeError(f"{e}\n{tail}") from None


def restart_apiservers(sb: Sandbox, masters: Iterable[str] = MASTERS, timeout: float = 150) -> None:
    """All at once: the sandbox's restarts take ~20 s each (kube-apiserver's graceful shutdown)."""
    with ThreadPoolExecutor(max_workers=len(MASTERS)) as pool:
        for f in [pool.submit(restart_apiserver, sb, m, timeout) for m in masters]:
            f.result()


def clear_state_dirs(sb: Sandbox) -> None:
    """Empty every master's /var/lib/metrics-aggregation (what a previous stack's host script kept)."""
    for m in MASTERS:
        d = host_path(sb, m, "/var/lib/metrics-aggregation")
        for p in d.iterdir():
            _remove(p)


def install_guide_files(sb: Sandbox, bundle: Bundle) -> None:
    for m in MASTERS:
        install(sb, m, GUIDE_CA, bundle.ca_cert_pem, 0o644)
        install(sb, m, GUIDE_CERT, bundle.cert_pem, 0o644)
        install(sb, m, GUIDE_KEY, bundle.key_pem, 0o600)
        edit_env_file(sb, m, lambda text: add_flags(text, GUIDE_FLAGS))


def install_kubeadm_files(sb: Sandbox, bundle: Bundle) -> None:
    for m in MASTERS:
        install(sb, m, KUBEADM_CA, bundle.ca_cert_pem, 0o644)
        install(sb, m, KUBEADM_CA_KEY, bundle.ca_key_pem, 0o600)
        install(sb, m, KUBEADM_CERT, bundle.cert_pem, 0o644)
        install(sb, m, KUBEADM_KEY, bundle.key_pem, 0o600)
        edit_env_file(sb, m, lambda text: add_flags(text, (*KUBEADM_FLAGS, SANDBOX_ROUTING_FLAG)))


# ------------------------------------------------------------------------------------------ snapshots
@dataclass(frozen=True)
class FileState:
    data: bytes | None  # a file's bytes; None for a directory
    entries: tuple[str, ...]  # a directory's names (sorted); () for a file
    mode: int
    uid: int
    gid: int


Snapshot = dict[str, dict[str, FileState | None]]  # master -> path inside the master -> state (None: absent)


def file_state(p: Path) -> FileState | None:
    try:
        st = p.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return FileState(None, tuple(sorted(os.listdir(p))), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return FileState(p.read_bytes(), (), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def snapshot(sb: Sandbox, paths: Iterable[str] = (*WATCHED_DIRS, *WATCHED_FILES)) -> Snapshot:
    """Per master: bytes, mode and owner of each watched file, and each watched directory's names."""
    return {m: {p: file_state(host_path(sb, m, p)) for p in paths} for m in MASTERS}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """One line per difference, e.g. `master2 /etc/kubernetes/ssl/aggregator.pem: missing`."""
    out = []
    for m, files in before.items():
        for path, was in files.items():
            now = after.get(m, {}).get(path)
            where = f"{m} {path}"
            if was is None or now is None:
                if was != now:
                    out.append(f"{where}: {'missing' if now is None else 'appeared'}")
                continue
            if was.data != now.data:
                out.append(f"{where}: bytes differ (sha256 {_digest(was.data or b'')} -> {_digest(now.data or b'')})")
            if was.entries != now.entries:
                added, gone = sorted(set(now.entries) - set(was.entries)), sorted(set(was.entries) - set(now.entries))
                out.append(f"{where}: entries" + (f" added {added}" if added else "") + (f" gone {gone}" if gone else ""))
            if was.mode != now.mode:
                out.append(f"{where}: mode {was.mode:04o} -> {now.mode:04o}")
            if (was.uid, was.gid) != (now.uid, now.gid):
                out.append(f"{where}: owner {was.uid}:{was.gid} -> {now.uid}:{now.gid}")
    return out


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def restore(sb: Sandbox, snap: Snapshot) -> None:
    """Put every watched path back as `snap` has it (no restart): the test's own way back between cases,
    whatever an earlier case left."""
    for m, files in snap.items():
        dirs = sorted((p for p, s in files.items() if p in WATCHED_DIRS), key=len)
        for path in dirs:
            p, want = host_path(sb, m, path), files[path]
            if want is None:
                _remove(p)
                continue
            p.mkdir(parents=True, exist_ok=True)
            os.chmod(p, want.mode)
            os.chown(p, want.uid, want.gid)
        for path, want in files.items():
            if path in WATCHED_DIRS:
                continue
            p = host_path(sb, m, path)
            if want is None:
                _remove(p)
            elif want.data is not None:
                p.write_bytes(want.data)
                os.chmod(p, want.mode)
                os.chown(p, want.uid, want.gid)
        for path in dirs:
            want = files[path]
            if want is not None:
                d = host_path(sb, m, path)
                for name in set(os.listdir(d)) - set(want.entries):
                    _remove(d / name)


# ------------------------------------------------------------------------------------------ kubectl, objects
def kubectl(sb: Sandbox, *args: str, timeout: float = 120) -> str:
    """The toolchain's kubectl with the sandbox's admin kubeconfig (its discovery cache in the sandbox dir)."""
    argv = [sb.bin("kubectl"), f"--kubeconfig={sb.kubeconfig}", f"--cache-dir={sb.dir / 'kubectl-cache'}", *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise HandMadeError(f"kubectl {' '.join(args)} -> {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def manifest_objects(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def api_path(obj: dict) -> str:
    """The object's URL path on the apiserver."""
    version = obj["apiVersion"]
    base = "/api/v1" if version == "v1" else f"/apis/{version}"
    ns = obj["metadata"].get("namespace")
    return f"{base}{f'/namespaces/{ns}' if ns else ''}/{PLURALS[obj['kind']]}/{obj['metadata']['name']}"


def object_paths(path: Path) -> dict[str, str]:
    """`Kind/name` -> API path of every object of a manifest."""
    return {f"{o['kind']}/{o['metadata']['name']}": api_path(o) for o in manifest_objects(path)}


def read_objects(api: Api, paths: dict[str, str]) -> dict[str, dict | None]:
    return {k: api.get(p) for k, p in paths.items()}


def helm_release_secret() -> dict:
    """The Secret `helm install` keeps per release revision: the release as gzip'd JSON, base64'd by Helm
    (and once more as Secret data)."""
    release = {"name": HELM_RELEASE, "namespace": NAMESPACE, "version": 1,
               "info": {"status": "deployed", "description": "Install complete"},
               "chart": {"metadata": {"name": HELM_CHART, "version": HELM_CHART_VERSION,
                                      "appVersion": HELM_APP_VERSION, "apiVersion": "v2"}},
               "config": {"fullnameOverride": "metrics-server", "args": ["--kubelet-insecure-tls"]},
               "manifest": HELM_MANIFEST.read_text()}
    payload = base64.b64encode(gzip.compress(json.dumps(release).encode()))
    return {"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {"name": f"sh.helm.release.v1.{HELM_RELEASE}.v1", "namespace": NAMESPACE,
                         "labels": {"name": HELM_RELEASE, "owner": "helm", "status": "deployed", "version": "1"}},
            "data": {"release": base64.b64encode(payload).decode()}}


def helm_paths() -> dict[str, str]:
    secret = helm_release_secret()
    return {**object_paths(HELM_MANIFEST), f"Secret/{secret['metadata']['name']}": api_path(secret)}


def install_metrics_server(sb: Sandbox, how: str) -> dict[str, str]:
    """Apply metrics-server `how` a person would; -> `Kind/name` -> API path of what was made."""
    if how not in APPLY:
        raise ValueError(f"how: one of {', '.join(APPLY)}, not {how!r}")
    if how == "helm":
        kubectl(sb, *APPLY[how], "-f", str(HELM_MANIFEST))
        secret = helm_release_secret()
        sb.api().request("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
        return helm_paths()
    kubectl(sb, *APPLY[how], "-f", str(UPSTREAM_MANIFEST))
    return object_paths(UPSTREAM_MANIFEST)


def remove_metrics_server(sb: Sandbox, timeout: float = 90) -> None:
    """Every metrics-server object either manifest or the program makes, the APIService first; waits
    until they are gone (the garbage collector finishes foreground deletions)."""
    api = sb.api()
    paths = {**object_paths(UPSTREAM_MANIFEST), **helm_paths(), **PROGRAM_EXTRAS}
    ordered = sorted(set(paths.values()), key=lambda p: p != APISERVICE)
    for p in ordered:
        api.delete(p)
    wait_for(lambda: all(api.get(p) is None for p in ordered), "the metrics-server objects to be deleted", timeout,
             0.5, error=HandMadeError)


# ------------------------------------------------------------------------------------------ the metrics API
def node_metrics(api: Api) -> list[dict] | None:
    """The NodeMetricsList's items when every node is in it, else None (not answering, or not yet)."""
    try:
        body = api.get(METRICS_NODES)
    except (OSError, ApiError, ValueError):
        return None
    if not body or body.get("kind") != "NodeMetricsList":
        return None
    items = body.get("items") or []
    return items if {i["metadata"]["name"] for i in items} == set(NODES) else None


def wait_for_metrics(sb: Sandbox, masters: Iterable[str] = MASTERS, timeout: float = 150) -> dict[str, list[dict]]:
    """GET /apis/metrics.k8s.io/v1beta1/nodes through each master's aggregation layer until all nodes are in."""
    out = {}
    for m in masters:
        api = sb.master_api(m)
        out[m] = wait_for(lambda a=api: node_metrics(a), f"node metrics through {m}", timeout, 1.0,
                          error=HandMadeError)
    return out


# ------------------------------------------------------------------------------------------ the whole state
@dataclass
class HandMade:
    flavour: str  # guide | kubeadm
    how: str  # apply | apply-server-side | create | helm
    bundle: Bundle
    snapshot: Snapshot  # the masters right after the hand-made set-up
    objects: dict[str, dict]  # `Kind/name` -> the object as the apiserver returned it once the metrics API answered
    paths: dict[str, str]  # `Kind/name` -> API path

    @property
    def ca_file(self) -> str:
        return GUIDE_CA if self.flavour == "guide" else KUBEADM_CA

    @property
    def key_file(self) -> str:
        return GUIDE_KEY if self.flavour == "guide" else KUBEADM_KEY


def build(sb: Sandbox, flavour: str, how: str, pristine: Snapshot) -> HandMade:
    """From whatever state: metrics-server removed, the masters back to `pristine`, then the flavour's
    files and flags, every apiserver restarted and ready, metrics-server installed `how`, and the metrics
    API answering through every master. Raises HandMadeError on any step that does not work."""
    remove_metrics_server(sb)
    restore(sb, pristine)
    clear_state_dirs(sb)
    if flavour == "guide":
        bundle = guide_bundle()
        install_guide_files(sb, bundle)
    elif flavour == "kubeadm":
        bundle = kubeadm_bundle()
        install_kubeadm_files(sb, bundle)
    else:
        raise ValueError(f"flavour: guide or kubeadm, not {flavour!r}")
    restart_apiservers(sb)
    paths = install_metrics_server(sb, how)
    wait_for_metrics(sb)
    objects = read_objects(sb.api(), paths)
    missing = [k for k, v in objects.items() if v is None]
    if missing:
        raise HandMadeError(f"not on the apiserver after `{how}`: {', '.join(missing)}")
    return HandMade(flavour, how, bundle, snapshot(sb), objects, paths)  # type: ignore[arg-type]
