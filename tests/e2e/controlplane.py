"""A throw-away Kubernetes control plane on loopback for the engine tier: etcd + kube-apiserver +
kube-controller-manager (garbage collector only), from the toolchain's bin dir.

    cp = ControlPlane.start(bin_dir, workdir)   # < 60 s; raises ControlPlaneError with the logs
    cp.kubeconfig                               # path of an admin kubeconfig (system:masters)
    cp.close()                                  # kills what it started, by pid

Why each piece:
  * there is no kubelet, scheduler or endpoints controller: the Deployment never gets pods and the
    Service no endpoints, so the stacks set metricsServer.expectNoPods (both awaits skipped).
  * pulumi-kubernetes deletes with `propagationPolicy: Foreground`: the object keeps a
    `foregroundDeletion` finalizer until the garbage collector (kube-controller-manager) removes it,
    so `destroy` needs the garbage collector running.
Certificates: one self-signed CA (openssl) for serving, client auth and the service-account key.
Everything listens on 127.0.0.1 on free ports; data lives in `workdir`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class ControlPlaneError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)}: {p.stderr.strip()}")


@dataclass
class ControlPlane:
    bin_dir: Path
    dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    port: int = 0
    kubeconfig: Path = Path()

    # ---- set-up
    @classmethod
    def start(cls, bin_dir: Path, workdir: Path, timeout: float = 60) -> ControlPlane:
        for b in ("etcd", "kube-apiserver", "kube-controller-manager"):
            if not (bin_dir / b).exists():
                raise ControlPlaneError(f"{bin_dir / b} is missing: bash toolchain/build.sh build etcd kube-apiserver kube-controller-manager")
        cp = cls(bin_dir, workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            cp._pki()
            cp._etcd(deadline)
            cp._apiserver(deadline)
            cp._controller_manager()
        except BaseException:
            cp.close()
            raise
        return cp

    def _pki(self) -> None:
        d = self.dir
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "1", "-subj", "/CN=e2e-kube-ca", cwd=d)
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes\n"
                                   "extendedKeyUsage=serverAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
                 "-subj", "/CN=kube-apiserver", cwd=d)
        _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "apiserver.crt", "-days", "1", "-extfile", "san.cnf", cwd=d)
        (d / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "admin.key", "-out", "admin.csr",
                 "-subj", "/O=system:masters/CN=e2e-admin", cwd=d)
        _openssl("x509", "-req", "-in", "admin.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "admin.crt", "-days", "1", "-extfile", "client.cnf", cwd=d)
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = p
        return p

    def log_tail(self, name: str, n: int = 3000) -> str:
        f = self.dir / f"{name}.log"
        return f.read_text(errors="replace")[-n:] if f.exists() else ""

    def _wait(self, name: str, pred, deadline: float) -> None:
        while not pred():
            if self.procs[name].poll() is not None:
                raise ControlPlaneError(f"{name} exited ({self.procs[name].returncode}):\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{name} not ready in time:\n{self.log_tail(name)}")
            time.sleep(0.2)

    def _etcd(self, deadline: float) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            str(self.bin_dir / "etcd"), "--name", "e2e", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{peer}", "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            "--log-level", "warn", "--quota-backend-bytes", str(256 * 1024 * 1024), "--unsafe-no-fsync",
        ])

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=1) as r:
                    return json.loads(r.read()).get("health") == "true"
            except OSError:
                return False

        self._wait("etcd", healthy, deadline)

    def _apiserver(self, deadline: float) -> None:
        d = self.dir
        self.port = free_port()
        self._spawn("kube-apiserver", [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1", f"--secure-port={self.port}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24", "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount", "--profiling=false",
            f"--cert-dir={d / 'apiserver-certs'}",
        ])
        self.kubeconfig = d / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": f"https://127.0.0.1:{self.port}",
                                                      "certificate-authority": str(d / "ca.crt")}}],
            "users": [{"name": "admin", "user": {"client-certificate": str(d / "admin.crt"),
                                                 "client-key": str(d / "admin.key")}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        }))
        self._wait("kube-apiserver", lambda: self.get("/readyz", raw=True) == "ok", deadline)
        # kube-system exists once the bootstrap controllers ran
        self._wait("kube-apiserver", lambda: self.get("/api/v1/namespaces/kube-system") is not None, deadline)

    def _controller_manager(self) -> None:
        self._spawn("kube-controller-manager", [
            str(self.bin_dir / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            "--controllers=garbagecollector", "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}", "--use-service-account-credentials=false",
        ])

    # ---- API access (admin client certificate)
    def _ctx(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        ctx.load_cert_chain(str(self.dir / "admin.crt"), str(self.dir / "admin.key"))
        return ctx

    def request(self, method: str, path: str, body: dict | None = None, raw: bool = False):
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self._ctx(), timeout=5) as r:
                data = r.read().decode()
                return data if raw else json.loads(data)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            if raw:
                return e.read().decode()
            raise
        except OSError:
            return None

    def get(self, path: str, raw: bool = False):
        return self.request("GET", path, raw=raw)

    # ---- teardown
    def close(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
