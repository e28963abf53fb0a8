"""The sandbox's stand-in for a kubelet and the endpoints controller, for one Deployment: metrics-server.

    python -m sandbox.podrunner --dir D --servers https://a:6443,... --address 198.18.B.20 --metrics-server BIN

Every second it reads the Deployment `metrics-server` (in --namespace), its ServiceAccount, the Secret
and ConfigMap volumes its pod template mounts, and the Service of the same name, and then
  * runs the pod template's first container as a process: the container's own args, each value under a
    volumeMount's mountPath rewritten to the volume's files here (written from the Secret/ConfigMap, 0600),
    plus what a pod gets from its environment: `--bind-address=<address>` (the pod IP) and a kubeconfig
    holding a token the TokenRequest API issued for the pod's ServiceAccount (so metrics-server acts with
    exactly the RBAC the program created). Any change of the args, the mounted data or the ServiceAccount
    restarts it; a deleted Deployment stops it;
  * registers the Service's endpoints as the EndpointSlice controller would (an EndpointSlice labelled
    kubernetes.io/service-name, owned by the Service, the port resolved from the Service's targetPort), ready
    only while the process runs; the Service gone, the slice goes.
There is no scheduler or ReplicaSet controller here, so the Deployment never reports pods: the sandbox stack
says so with metricsServer.expectNoPods. Standard library only; runs until SIGTERM (or --max-hours).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lab.kube import Api, ApiError, admin_api, daemon_parser

NAME = "metrics-server"
SLICE_NAME = "metrics-server-sandbox"
MANAGED_BY = "podrunner.sandbox.metrics-aggregation"
TOKEN_SECONDS = 24 * 3600


class Pod:
    """What the stand-in kubelet runs for the Deployment now (None fields: nothing to run)."""

    def __init__(self, args: list[str], files: dict[str, bytes], dirs: list[str], service_account: str, port: int,
                 port_name: str):
        self.args, self.files, self.dirs, self.service_account = args, files, dirs, service_account
        self.port, self.port_name = port, port_name
        h = hashlib.sha256(json.dumps([args, dirs, service_account, port]).encode())
        for k in sorted(files):
            h.update(k.encode() + b"\0" + files[k] + b"\0")
        self.fingerprint = h.hexdigest()


def volume_files(api: Api, ns: str, volume: dict) -> dict[str, bytes] | None:
    """key -> bytes of a Secret/ConfigMap volume; {} for emptyDir; None while the source is missing."""
    if "secret" in volume:
        s = api.get(f"/api/v1/namespaces/{ns}/secrets/{volume['secret']['secretName']}")
        return None if s is None else {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
    if "configMap" in volume:
        c = api.get(f"/api/v1/namespaces/{ns}/configmaps/{volume['configMap']['name']}")
        return None if c is None else {k: v.encode() for k, v in (c.get("data") or {}).items()}
    return {}


def desired(api: Api, ns: str, workdir: Path) -> Pod | None:
    dep = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{NAME}")
    if dep is None or dep["metadata"].get("deletionTimestamp"):
        return None
    spec = dep["spec"]["template"]["spec"]
    container = spec["containers"][0]
    sa = spec.get("serviceAccountName") or "default"
    if api.get(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}") is None:
        return None
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files: dict[str, bytes] = {}
    rewrite: list[tuple[str, str]] = []
    dirs: list[str] = []
    for m in container.get("volumeMounts", []):
        data = volume_files(api, ns, volumes[m["name"]])
        if data is None:
            return None  # ContainerCreating: the Secret/ConfigMap is not there yet
        local = workdir / "volumes" / m["name"]
        rewrite.append((m["mountPath"].rstrip("/"), str(local)))
        dirs.append(m["name"])
        for k, v in data.items():
            files[f"{m['name']}/{k}"] = v
    args = []
    for arg in container.get("args", []):
        flag, eq, value = arg.partition("=")
        for mount, local in rewrite:
            if eq and (value == mount or value.startswith(mount + "/")):
                value = local + value[len(mount):]
        args.append(f"{flag}{eq}{value}")
    port = container.get("ports", [{}])[0]
    return Pod(args, files, dirs, sa, int(port.get("containerPort", 10250)), port.get("name", "https"))


class Runner:
    def __init__(self, api: Api, ns: str, workdir: Path, address: str, binary: str, servers: list[str]):
        self.api, self.ns, self.workdir, self.address, self.binary = api, ns, workdir, address, binary
        self.servers = servers
        self.proc: subprocess.Popen | None = None
        self.running: str | None = None
        self.log = open(workdir / "metrics-server.log", "ab", buffering=0)  # noqa: SIM115

    def note(self, msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} podrunner: {msg}", flush=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.note("metrics-server stopped")
        self.proc, self.running = None, None

    def start(self, pod: Pod) -> None:
        self.stop()
        vols = self.workdir / "volumes"
        for d in pod.dirs:
            (vols / d).mkdir(parents=True, exist_ok=True, mode=0o700)
        for rel, data in pod.files.items():
            f = vols / rel
            f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            f.write_bytes(data)
            os.chmod(f, 0o600)
        tr = self.api.request("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{pod.service_account}/token",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": TOKEN_SECONDS}})
        kc = self.workdir / "kubeconfig"
        kc.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "c", "cluster": {"server": self.servers[0], "certificate-authority": str(self.api.ca)}}],
            "users": [{"name": pod.service_account, "user": {"token": tr["status"]["token"]}}],
            "contexts": [{"name": "pod", "context": {"cluster": "c", "user": pod.service_account,
                                                     "namespace": self.ns}}],
        }))
        os.chmod(kc, 0o600)
        argv = [self.binary, *pod.args, f"--bind-address={self.address}", f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}"]
        self.log.write(f"--- podrunner: {' '.join(argv)}\n".encode())
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.running = pod.fingerprint
        self.note(f"metrics-server started (pid {self.proc.pid}) as {self.ns}/{pod.service_account}: {' '.join(pod.args)}")

    def sync_slice(self, pod: Pod | None) -> None:
        path = f"/apis/discovery.k8s.io/v1/namespaces/{self.ns}/endpointslices"
        svc = self.api.get(f"/api/v1/namespaces/{self.ns}/services/{NAME}")
        if svc is None or svc["metadata"].get("deletionTimestamp"):
            if self.api.get(f"{path}/{SLICE_NAME}") is not None:
                self.api.delete(f"{path}/{SLICE_NAME}")
                self.note("EndpointSlice removed (Service gone)")
            return
        ports = []
        for sp in svc["spec"].get("ports", []):
            target = sp.get("targetPort", sp["port"])
            if pod is not None and (target == pod.port_name or target == pod.port):
                ports.append({"name": sp.get("name", ""), "port": pod.port, "protocol": sp.get("protocol", "TCP")})
        ready = self.proc is not None and self.proc.poll() is None
        body = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": SLICE_NAME, "namespace": self.ns,
                         "labels": {"kubernetes.io/service-name": NAME, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": NAME,
                                              "uid": svc["metadata"]["uid"]}]},
            "endpoints": [{"addresses": [self.address], "conditions": {"ready": ready}}] if ports else [],
            "ports": ports,
        }
        current = self.api.get(f"{path}/{SLICE_NAME}")
        if current is not None and all(current.get(k) == body.get(k) for k in ("endpoints", "ports")) and \
                current["metadata"].get("ownerReferences", [{}])[0].get("uid") == svc["metadata"]["uid"]:
            return
        self.api.apply(path, SLICE_NAME, body)
        self.note(f"EndpointSlice {SLICE_NAME}: {self.address} ready={ready} ports={ports}")

    def tick(self) -> None:
        pod = desired(self.api, self.ns, self.workdir)
        if pod is None:
            if self.proc is not None:
                self.stop()
        elif pod.fingerprint != self.running:
            self.start(pod)
        elif self.proc is not None and self.proc.poll() is not None:
            self.note(f"metrics-server exited with {self.proc.returncode}; restarting (CrashLoopBackOff)")
            time.sleep(2)
            self.start(pod)
        self.sync_slice(pod)


def main(argv: list[str]) -> int:
    ap = daemon_parser()
    ap.add_argument("--metrics-server", required=True)
    ap.add_argument("--namespace", default="kube-system")
    a = ap.parse_args(argv)
    servers = a.servers.split(",")
    api = admin_api(a.dir, a.servers)
    workdir = a.dir / "pods" / NAME
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    runner = Runner(api, a.namespace, workdir, a.address, a.metrics_server, servers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + a.max_hours * 3600
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            runner.tick()
        except (OSError, ApiError, KeyError, ValueError) as e:
            runner.note(f"sync failed (retrying): {e}")
        stop.wait(1.0)
    runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
