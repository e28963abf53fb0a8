"""Real Kubernetes control-plane processes from the toolchain's bin dir, for the lab's clusters: the
command lines of etcd, kube-apiserver and kube-controller-manager (garbage collector only), an admin
kubeconfig, and ControlPlane, one of each on 127.0.0.1 (the engine tier's throw-away cluster).
The sandbox (sandbox/cluster.py) runs the same processes in its namespaces.

    cp = ControlPlane.start(bin_dir, workdir)   # < 60 s; raises ControlPlaneError with the logs
    cp.kubeconfig                               # path of an admin kubeconfig (system:masters)
    cp.get("/api/v1/namespaces")                # dict, or None for 404 (kube.Api)
    cp.close()                                  # kills what it started, by pid

Why each piece:
  * there is no kubelet, scheduler or endpoints controller: the Deployment never gets pods and the
    Service no endpoints, so the stacks set metricsServer.expectNoPods (both awaits skipped).
  * pulumi-kubernetes deletes with `propagationPolicy: Foreground`: the object keeps a
    `foregroundDeletion` finalizer until the garbage collector (kube-controller-manager) removes it,
    so `destroy` needs the garbage collector running.
Certificates: pki.py's table (cluster CA for serving and client auth, the service-account key).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lab import pki as pki_mod
from lab.kube import Api
from lab.proc import LabError, free_port


class ControlPlaneError(LabError):
    pass


def etcd_argv(binary: str, name: str, data_dir: Path, client_urls: list[str], peer_url: str, metrics_url: str,
              quota_mib: int) -> list[str]:
    """One etcd member (plain HTTP: lab only), advertised on the first client URL."""
    return [
        binary, "--name", name, "--data-dir", str(data_dir),
        "--listen-client-urls", ",".join(client_urls), "--advertise-client-urls", client_urls[0],
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"{name}={peer_url}", "--listen-metrics-urls", metrics_url,
        "--log-level", "warn", "--quota-backend-bytes", str(quota_mib * 1024 * 1024), "--unsafe-no-fsync",
    ]


def etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return json.loads(r.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def apiserver_flags(*, advertise: str, bind: str, port: int, etcd: str, pki: Path, issuer: str,
                    before: list[str] = (), after: list[str] = ()) -> list[str]:
    """kube-apiserver's flags with pki.py's files under `pki` (ca, serving cert, sa keys); `before` go
    after the etcd servers, `after` at the end."""
    return [
        f"--advertise-address={advertise}", f"--bind-address={bind}", f"--secure-port={port}",
        f"--etcd-servers={etcd}", *before,
        f"--client-ca-file={pki}/ca.crt",
        f"--tls-cert-file={pki}/apiserver.crt",
        f"--tls-private-key-file={pki}/apiserver.key",
        f"--service-account-issuer={issuer}",
        f"--service-account-key-file={pki}/sa.pub",
        f"--service-account-signing-key-file={pki}/sa.key",
        "--service-cluster-ip-range=10.96.0.0/24",
        "--profiling=false", *after,
    ]


def controller_manager_argv(binary: str, kubeconfig: Path, secure_port: int) -> list[str]:
    # only the garbage collector: pulumi-kubernetes deletes with Foreground propagation, which needs it;
    # no endpoints/endpointslice controllers
    return [binary, f"--kubeconfig={kubeconfig}", "--controllers=garbagecollector", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={secure_port}", "--use-service-account-credentials=false"]


def write_kubeconfig(path: Path, name: str, server: str, pki: Path, user: str = "admin") -> None:
    """A kubeconfig for pki.py's admin certificate (system:masters), 0600."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": str(pki / "admin.crt"),
                                          "client-key": str(pki / "admin.key")}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    os.chmod(path, 0o600)


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

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    def _pki(self) -> None:
        pki_mod.ensure(self.pki, {"local": "127.0.0.1"}, "127.0.0.1", [])
        # kube-apiserver reads its serving pair under the names apiserver_flags gives it
        for ext in ("crt", "key"):
            os.link(self.pki / f"apiserver-local.{ext}", self.pki / f"apiserver.{ext}")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.dir / f"{name}.log", "ab") as log:
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
        self.etcd_url = f"http://127.0.0.1:{free_port()}"
        self._spawn("etcd", etcd_argv(str(self.bin_dir / "etcd"), "e2e", self.dir / "etcd", [self.etcd_url],
                                      f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}", 256))
        self._wait("etcd", lambda: etcd_healthy(self.etcd_url), deadline)

    def _apiserver(self, deadline: float) -> None:
        self.port = free_port()
        self._spawn("kube-apiserver", [str(self.bin_dir / "kube-apiserver"), *apiserver_flags(
            advertise="127.0.0.1", bind="127.0.0.1", port=self.port, etcd=self.etcd_url, pki=self.pki,
            issuer="https://kubernetes.default.svc",
            before=["--endpoint-reconciler-type=none", "--authorization-mode=RBAC",
                    "--disable-admission-plugins=ServiceAccount"],
            after=[f"--cert-dir={self.dir / 'apiserver-certs'}"])])
        self.kubeconfig = self.dir / "kubeconfig"
        write_kubeconfig(self.kubeconfig, "e2e", f"https://127.0.0.1:{self.port}", self.pki)
        self._wait("kube-apiserver", self.api().ok, deadline)
        # kube-system exists once the bootstrap controllers ran
        self._wait("kube-apiserver", lambda: self.get("/api/v1/namespaces/kube-system") is not None, deadline)

    def _controller_manager(self) -> None:
        self._spawn("kube-controller-manager", controller_manager_argv(
            str(self.bin_dir / "kube-controller-manager"), self.kubeconfig, free_port()))

    # ---- API access (admin client certificate)
    def api(self) -> Api:
        return Api((f"https://127.0.0.1:{self.port}",), ca=self.pki / "ca.crt", cert=self.pki / "admin.crt",
                   key=self.pki / "admin.key")

    def get(self, path: str):
        """The object at path, or None (404, or no answer); other HTTP errors raise kube.ApiError."""
        try:
            return self.api().get(path)
        except OSError:
            return None

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
