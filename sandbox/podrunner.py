"""The sandbox's stand-in for a kubelet and the endpoints controller, for one Deployment: metrics-server.

    python -m sandbox.podrunner --dir D --servers https://a:6443,... --address 198.18.B.20 \
        [--surge-address 198.18.B.21] --metrics-server BIN

Every second it reads the Deployment `metrics-server` (in --namespace), its ServiceAccount, the Secret
and ConfigMap volumes its pod template mounts, and the Service of the same name, and then
  * runs the pod template's first container as a process: the container's own args, each value under a
    volumeMount's mountPath rewritten to the volume's files here (written from the Secret/ConfigMap, 0600),
    plus what a pod gets from its environment: `--bind-address=<address>` (the pod IP) and a kubeconfig
    holding a token the TokenRequest API issued for the pod's ServiceAccount (so metrics-server acts with
    exactly the RBAC the program created). A change of the pod template (any field: args, ServiceAccount,
    volumes, resources, its annotations: what makes a Deployment roll out a new ReplicaSet) replaces it, the way the
    Deployment's strategy says: with a rolling update whose maxUnavailable comes to 0 (the program's
    one-replica Deployment) the new process starts first, on --surge-address, and the old one leaves the
    endpoints and stops only once the new one passes the container's readinessProbe (as a ReplicaSet
    rollout does); otherwise the old one stops first. New bytes in a mounted Secret or ConfigMap alone are
    written into the running process's files (each by rename), as the kubelet refreshes a volume, and a
    Secret or ConfigMap that is missing for a while (replaced: deleted, then created) leaves a running
    process alone; only a pod that has not started waits for it. A deleted Deployment stops it;
  * registers the Service's endpoints as the EndpointSlice controller would (an EndpointSlice labelled
    kubernetes.io/service-name, owned by the Service, the port resolved from the Service's targetPort), ready
    only while the process runs; the Service gone, the slice goes.
There is no scheduler or ReplicaSet controller here, so the Deployment never reports pods: the sandbox stack
says so with metricsServer.expectNoPods. Standard library only; runs until SIGTERM (or --max-hours).

Of the pod template it applies (APPLIED below): the first container's args exactly as given, in their order
(metricsServer.extraArgs such as --kubelet-request-timeout=5s or -v=2 included; a flag without a value stays
alone), its containerPort (readinessProbe, EndpointSlice), volumeMounts, readinessProbe path, the pod's
volumes and ServiceAccount; any change of the template (labels, annotations, spec) is a rollout. The
podrunner's own flags come after the container's, so for --bind-address and the kubeconfigs theirs win
(pflag keeps the last value): those are what the pod's network and ServiceAccount make them. It leaves
alone, each for the reason IGNORED gives, and prints them when a process starts:
  * tolerations, nodeSelector, affinity, topologySpreadConstraints, priorityClassName: they only mean
    something to a scheduler, and there is none: the pod has one place to run;
  * image (a digest too), imagePullPolicy, imagePullSecrets: nothing is pulled; the process is the
    toolchain's metrics-server binary (the version toolchain/versions.env pins);
  * resources: no cgroup is made; requests only weigh in scheduling, and limits are enforced by a node's
    container runtime through cgroups whose layout (v1 or v2, delegated or not) differs between the
    machines the sandbox runs on, so the process runs unlimited and the log shows what a node would enforce;
  * hostNetwork: the pods namespace stands for the node. A pod on the node's network listens on the node's
    address at its containerPort, a pod on its own network at the pod address: both are this namespace's
    address and the containerPort here, so both values run the same way (on a real node its kubelet holds
    10250, which is why the program refuses that containerPort with hostNetwork; the emulated kubelets
    listen in another namespace);
  * securityContext: the process runs as the podrunner's user, which owns the volume files it reads (0600);
  * livenessProbe: a process is restarted when it exits, not when /livez fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from lab.kube import Api, ApiError, admin_api, daemon_parser

NAME = "metrics-server"
SLICE_NAME = "metrics-server-sandbox"
MANAGED_BY = "podrunner.sandbox.metrics-aggregation"
TOKEN_SECONDS = 24 * 3600

# The pod template's fields the podrunner applies to the process it runs ("spec.*": the pod's, "container.*":
# the first container's), and those it leaves alone with the reason (see the module docstring). The program's
# Deployment sets no field outside the two: sandbox/tests holds that, so a new field is a decision.
APPLIED = {
    "metadata.labels": "a change rolls the process out",
    "metadata.annotations": "a change rolls the process out (the program's checksum/* annotations)",
    "spec.containers": "the first container runs as the process",
    "spec.serviceAccountName": "the process's kubeconfig holds a token of that ServiceAccount",
    "spec.volumes": "Secret, ConfigMap and emptyDir volumes are written under the podrunner's directory",
    "container.name": "names the process in the log",
    "container.args": "passed as given, in order; values under a mountPath point at the volume's files here",
    "container.ports": "the first containerPort: the readinessProbe's and the EndpointSlice's port",
    "container.volumeMounts": "where the args' paths are rewritten from",
    "container.readinessProbe": "its HTTPS GET path gates a rolling update",
}
NO_SCHEDULER = "no scheduler: the pod has one place to run"
NO_IMAGE = "nothing is pulled: the process is the toolchain's metrics-server binary"
IGNORED = {
    "spec.tolerations": NO_SCHEDULER,
    "spec.nodeSelector": NO_SCHEDULER,
    "spec.affinity": NO_SCHEDULER,
    "spec.topologySpreadConstraints": NO_SCHEDULER,
    "spec.priorityClassName": NO_SCHEDULER + " (nothing to preempt)",
    "spec.imagePullSecrets": NO_IMAGE,
    "spec.hostNetwork": "the pods namespace stands for the node: the same address and containerPort either way",
    "container.image": NO_IMAGE,
    "container.imagePullPolicy": NO_IMAGE,
    "container.resources": "no cgroup: the process runs unlimited (a node's container runtime enforces limits)",
    "container.securityContext": "the process runs as the podrunner's user, which owns the volume files",
    "container.livenessProbe": "a process is restarted when it exits, not when /livez fails",
}


def template_fields(template: dict) -> dict[str, object]:
    """The pod template's fields as APPLIED and IGNORED name them -> their values; unset, false and empty
    ones left out (hostNetwork false, no tolerations: nothing to apply or to leave alone)."""
    spec = template.get("spec") or {}
    parts = {"metadata": template.get("metadata") or {}, "spec": spec,
             "container": (spec.get("containers") or [{}])[0]}
    return {f"{part}.{k}": v for part, fields in parts.items() for k, v in fields.items()
            if v not in (None, False, "", [], {})}


def unapplied(template: dict) -> dict[str, object]:
    """The fields of the pod template that the podrunner leaves alone (IGNORED) -> their values."""
    return {k: v for k, v in template_fields(template).items() if k in IGNORED}


class Pod:
    """What the stand-in kubelet runs for the Deployment now (None fields: nothing to run)."""

    def __init__(self, args: list[str], files: dict[str, bytes], dirs: list[str], service_account: str, port: int,
                 port_name: str, *, surge: bool = False, ready_path: str | None = None,
                 template: dict | None = None):
        self.args, self.files, self.dirs, self.service_account = args, files, dirs, service_account
        self.port, self.port_name = port, port_name
        # how a replacement rolls out (the Deployment's strategy, not the pod's: not in the fingerprint)
        self.surge = surge  # start the new process before the old one stops
        self.ready_path = ready_path  # the readinessProbe's HTTPS GET path; None: ready once running
        self.template = template or {}
        # the pod template (any change of it is a rollout, as it makes a new ReplicaSet) and, apart, the
        # mounted bytes (refreshed in place)
        self.fingerprint = hashlib.sha256(json.dumps([args, dirs, service_account, port, self.template],
                                                     sort_keys=True).encode()).hexdigest()
        h = hashlib.sha256()
        for k in sorted(files):
            h.update(k.encode() + b"\0" + files[k] + b"\0")
        self.files_digest = h.hexdigest()


# desired(): the Deployment is there, but its pod cannot start yet (ContainerCreating: a ServiceAccount,
# Secret or ConfigMap it needs is missing)
PENDING = "pending"


def volume_files(api: Api, ns: str, volume: dict) -> dict[str, bytes] | None:
    """key -> bytes of a Secret/ConfigMap volume; {} for emptyDir; None while the source is missing."""
    if "secret" in volume:
        s = api.get(f"/api/v1/namespaces/{ns}/secrets/{volume['secret']['secretName']}")
        return None if s is None else {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
    if "configMap" in volume:
        c = api.get(f"/api/v1/namespaces/{ns}/configmaps/{volume['configMap']['name']}")
        return None if c is None else {k: v.encode() for k, v in (c.get("data") or {}).items()}
    return {}


def max_unavailable(deployment: dict) -> int:
    """The Deployment's rolling update maxUnavailable as a number of pods (a percentage rounds down, as
    the Deployment controller rounds it); Recreate: every replica."""
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return replicas
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return replicas * int(value[:-1]) // 100
    return int(value)


def desired(api: Api, ns: str, workdir: Path) -> Pod | str | None:
    """The pod the Deployment asks for; PENDING while something it mounts or runs as is missing; None
    without a Deployment (or one being deleted)."""
    dep = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{NAME}")
    if dep is None or dep["metadata"].get("deletionTimestamp"):
        return None
    spec = dep["spec"]["template"]["spec"]
    container = spec["containers"][0]
    sa = spec.get("serviceAccountName") or "default"
    if api.get(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}") is None:
        return PENDING
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files: dict[str, bytes] = {}
    rewrite: list[tuple[str, str]] = []
    dirs: list[str] = []
    for m in container.get("volumeMounts", []):
        data = volume_files(api, ns, volumes[m["name"]])
        if data is None:
            return PENDING  # ContainerCreating: the Secret/ConfigMap is not there yet
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
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    return Pod(args, files, dirs, sa, int(port.get("containerPort", 10250)), port.get("name", "https"),
               surge=max_unavailable(dep) == 0, ready_path=probe.get("path"), template=dep["spec"]["template"])


READY_TIMEOUT = 180.0  # a new process that is not ready by then is dropped; the old one keeps serving
# After the old process leaves the EndpointSlice and before it is stopped: the apiservers' EndpointSlice
# watches see it go (a pod's termination grace does the same for in-flight requests)
DRAIN_SECONDS = 2.0


class Running:
    """One metrics-server process: the pod it runs, at which address, from which directory."""

    def __init__(self, pod: Pod, address: str, proc: subprocess.Popen, ready: bool):
        self.pod, self.address, self.proc, self.ready = pod, address, proc, ready
        self.fingerprint = pod.fingerprint  # of the pod as desired() made it, before start() moved its files
        self.files_digest = pod.files_digest

    def alive(self) -> bool:
        return self.proc.poll() is None


class Runner:
    def __init__(self, api: Api, ns: str, workdir: Path, address: str, binary: str, servers: list[str],
                 surge_address: str | None = None):
        self.api, self.ns, self.workdir, self.address, self.binary = api, ns, workdir, address, binary
        self.surge_address = surge_address
        self.servers = servers
        self.current: Running | None = None
        self.starting: Running | None = None  # a surge process not ready yet: in the slice, not ready
        self.log = open(workdir / "metrics-server.log", "ab", buffering=0)  # noqa: SIM115

    def note(self, msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} podrunner: {msg}", flush=True)

    def _dir(self, address: str) -> Path:
        # each address has its files: a surge process must not change the old one's (its volumes)
        return self.workdir if address == self.address else self.workdir / "surge"

    def _stop(self, r: Running | None) -> None:
        if r is not None and r.alive():
            r.proc.terminate()
            try:
                r.proc.wait(15)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(5)
            self.note(f"metrics-server stopped (pid {r.proc.pid}, {r.address})")

    def stop(self) -> None:
        self._stop(self.starting)
        self._stop(self.current)
        self.current = self.starting = None

    def start(self, pod: Pod, address: str | None = None, *, ready: bool = True) -> Running:
        """Run `pod` at `address` (default: the main one); `ready`: whether it counts as ready at once."""
        address = address or self.address
        fingerprint = pod.fingerprint
        d = self._dir(address)
        if d != self.workdir:
            # desired() rewrote the mount paths under workdir/volumes: this process reads its own copy
            old, new = str(self.workdir / "volumes"), str(d / "volumes")
            pod = Pod([a.replace(old, new, 1) for a in pod.args], pod.files, pod.dirs, pod.service_account, pod.port,
                      pod.port_name, surge=pod.surge, ready_path=pod.ready_path, template=pod.template)
        self.write_volumes(pod, d)
        tr = self.api.request("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{pod.service_account}/token",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": TOKEN_SECONDS}})
        kc = d / "kubeconfig"
        kc.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "c", "cluster": {"server": self.servers[0], "certificate-authority": str(self.api.ca)}}],
            "users": [{"name": pod.service_account, "user": {"token": tr["status"]["token"]}}],
            "contexts": [{"name": "pod", "context": {"cluster": "c", "user": pod.service_account,
                                                     "namespace": self.ns}}],
        }))
        os.chmod(kc, 0o600)
        argv = [self.binary, *pod.args, f"--bind-address={address}", f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}"]
        self.log.write(f"--- podrunner: {' '.join(argv)}\n".encode())
        proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.note(f"metrics-server started (pid {proc.pid}) at {address} as {self.ns}/{pod.service_account}: "
                  f"{' '.join(pod.args)}")
        left = unapplied(pod.template)
        if left:
            self.note("not applied in the sandbox (podrunner.IGNORED says why): " + "; ".join(
                f"{k}={json.dumps(v, sort_keys=True, separators=(',', ':'))}" for k, v in left.items()))
        running = Running(pod, address, proc, ready)
        running.fingerprint = fingerprint
        return running

    @staticmethod
    def write_volumes(pod: Pod, d: Path) -> None:
        """The pod's volume files under d/volumes, each written to a temp file and renamed over the old one
        (a process watching them never reads half a file; the kubelet swaps a symlink to the same end)."""
        vols = d / "volumes"
        for sub in pod.dirs:
            (vols / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        for rel, data in pod.files.items():
            f = vols / rel
            f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = f.with_name(f".{f.name}.new")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, f)

    def refresh_volumes(self, pod: Pod) -> None:
        """New bytes in a mounted Secret/ConfigMap, same pod template: the running process's files change
        under it, as the kubelet refreshes a volume; nothing restarts."""
        r = self.current
        assert r is not None
        self.write_volumes(pod, self._dir(r.address))
        r.files_digest = pod.files_digest
        self.note(f"volume data refreshed for the running metrics-server at {r.address} (no restart)")

    def passes_readiness(self, r: Running) -> bool:
        """The readinessProbe (an HTTPS GET, as the kubelet makes it: no certificate checked) passes."""
        if not r.alive():
            return False
        if r.pod.ready_path is None:
            return True
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            with urllib.request.urlopen(f"https://{r.address}:{r.pod.port}{r.pod.ready_path}", context=ctx,
                                        timeout=2) as resp:
                return 200 <= resp.status < 400
        except (OSError, urllib.error.URLError):
            return False

    def roll(self, pod: Pod) -> None:
        """Replace the running process with one for `pod`, as the Deployment's strategy says."""
        old = self.current
        assert old is not None
        if not (pod.surge and self.surge_address):
            self._stop(old)
            self.current = self.start(pod, old.address)
            return
        spare = self.surge_address if old.address != self.surge_address else self.address
        self.starting = self.start(pod, spare, ready=False)
        self.sync_slice(pod)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.passes_readiness(self.starting):
            if not self.starting.alive() or time.monotonic() > deadline:
                self.note(f"the new metrics-server at {spare} did not become ready; the old one keeps serving")
                self._stop(self.starting)
                self.starting = None
                self.sync_slice(pod)
                return
            time.sleep(0.5)
        new, self.starting = self.starting, None
        new.ready = True
        self.current = new
        self.sync_slice(pod)  # the old process leaves the endpoints...
        time.sleep(DRAIN_SECONDS)
        self._stop(old)  # ...then stops
        self.note(f"rolled: {old.address} -> {new.address}")

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
        running = [r for r in (self.current, self.starting) if r is not None]
        endpoints = [{"addresses": [r.address], "conditions": {"ready": r.ready and r.alive()}} for r in running]
        body = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": SLICE_NAME, "namespace": self.ns,
                         "labels": {"kubernetes.io/service-name": NAME, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": NAME,
                                              "uid": svc["metadata"]["uid"]}]},
            "endpoints": (endpoints or [{"addresses": [self.address], "conditions": {"ready": False}}]) if ports else [],
            "ports": ports,
        }
        current = self.api.get(f"{path}/{SLICE_NAME}")
        if current is not None and all(current.get(k) == body.get(k) for k in ("endpoints", "ports")) and \
                current["metadata"].get("ownerReferences", [{}])[0].get("uid") == svc["metadata"]["uid"]:
            return
        self.api.apply(path, SLICE_NAME, body)
        self.note(f"EndpointSlice {SLICE_NAME}: {body['endpoints']} ports={ports}")

    def tick(self) -> None:
        pod = desired(self.api, self.ns, self.workdir)
        if pod is None:
            if self.current is not None:
                self.stop()
        elif pod == PENDING:
            return  # a running pod keeps running on what it has; a new one waits
        elif self.current is None:
            self.current = self.start(pod)
        elif pod.fingerprint != self.current.fingerprint:
            self.roll(pod)
        elif not self.current.alive():
            self.note(f"metrics-server exited with {self.current.proc.returncode}; restarting (CrashLoopBackOff)")
            time.sleep(2)
            self.current = self.start(pod, self.current.address)
        elif pod.files_digest != self.current.files_digest:
            self.refresh_volumes(pod)
        self.sync_slice(pod)


def main(argv: list[str]) -> int:
    ap = daemon_parser()
    ap.add_argument("--metrics-server", required=True)
    ap.add_argument("--namespace", default="kube-system")
    ap.add_argument("--surge-address", help="a second address of this namespace, for a new process started "
                    "before the old one stops (a rolling update with maxUnavailable 0)")
    a = ap.parse_args(argv)
    servers = a.servers.split(",")
    api = admin_api(a.dir, a.servers)
    workdir = a.dir / "pods" / NAME
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    runner = Runner(api, a.namespace, workdir, a.address, a.metrics_server, servers, a.surge_address)
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
