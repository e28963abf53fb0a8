"""Emulated kubelets for the sandbox: what metrics-server needs from a node, and nothing more.

    python -m sandbox.kubelets --dir D --servers https://a:6443,... --address 198.18.B.30 --nodes n1,n2,n3

For node i (0-based) it
  * registers the Node object (as a kubelet does) and keeps its Ready condition fresh (every 20 s), with
    status.addresses InternalIP=<address> and daemonEndpoints.kubeletEndpoint.Port = 10250 + i, so
    metrics-server (`--kubelet-use-node-status-port`) scrapes https://<address>:<10250+i>;
  * serves GET /metrics/resource there over TLS with the node's serving cert (pki/kubelet-<node>.crt,
    signed by pki/kubelet-ca.crt: the CA the sandbox stack gives metrics-server as kubeletCaCertFile),
    in the kubelet's Prometheus text format: node_cpu_usage_seconds_total grows at (i + 1) * 250m and
    node_memory_working_set_bytes is (i + 1) * 512 MiB, so `kubectl top node` shows known figures; and one
    container (kube-system/kube-proxy-<i>, as every node runs pods): metrics-server's readiness
    (/readyz, "metric-storage-ready") needs two scrapes of pod metrics as well as of node metrics;
  * refuses requests without a bearer token (401), as a kubelet with webhook authentication would.
Standard library only. Runs until SIGTERM; the Node objects stay (`make sandbox-down` removes etcd).
"""

from __future__ import annotations

import datetime
import http.server
import signal
import ssl
import sys
import threading
import time
from pathlib import Path

from lab.kube import Api, ApiError, admin_api, daemon_parser

BASE_PORT = 10250
CPU_MILLICORES_PER_INDEX = 250
MEMORY_BYTES_PER_INDEX = 512 * 1024 * 1024
HEARTBEAT_SECONDS = 20
CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
STARTED = time.time()


def node_usage(index: int, now: float) -> tuple[float, float]:
    """(cumulative CPU seconds, working set bytes) of node `index` at `now`."""
    cores = CPU_MILLICORES_PER_INDEX * (index + 1) / 1000
    return cores * (now - STARTED + 1000.0), float(MEMORY_BYTES_PER_INDEX * (index + 1))


# the node's one pod (no Pod object: metrics-server serves pod metrics only for pods it knows, so it shows
# nowhere; it only lets metrics-server's storage become ready, as a real node's pods do)
POD_CPU_CORES = 0.01
POD_MEMORY_BYTES = 32 * 1024 * 1024


def metrics_text(index: int, now: float) -> str:
    cpu, mem = node_usage(index, now)
    ts = int(now * 1000)
    labels = f'{{container="kube-proxy",namespace="kube-system",pod="kube-proxy-{index}"}}'
    return (
        "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n"
        "# TYPE node_cpu_usage_seconds_total counter\n"
        f"node_cpu_usage_seconds_total {cpu:.6f} {ts}\n"
        "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n"
        "# TYPE node_memory_working_set_bytes gauge\n"
        f"node_memory_working_set_bytes {mem:.0f} {ts}\n"
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n"
        "# TYPE container_cpu_usage_seconds_total counter\n"
        f"container_cpu_usage_seconds_total{labels} {POD_CPU_CORES * (now - STARTED + 1000.0):.6f} {ts}\n"
        "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n"
        "# TYPE container_memory_working_set_bytes gauge\n"
        f"container_memory_working_set_bytes{labels} {POD_MEMORY_BYTES} {ts}\n"
        "# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds\n"
        "# TYPE container_start_time_seconds gauge\n"
        f"container_start_time_seconds{labels} {STARTED - 1000.0:.3f} {ts}\n"
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n"
        "# TYPE resource_scrape_error gauge\n"
        "resource_scrape_error 0\n"
    )


def node_object(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "node.kubernetes.io/instance-type": "sandbox-emulated"}}}


def node_status(name: str, index: int, address: str) -> dict:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": BASE_PORT + index}},
        "capacity": CAPACITY, "allocatable": CAPACITY,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "emulated kubelet (metrics-aggregation sandbox)",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": "sandbox-emulated", "architecture": "amd64", "operatingSystem": "linux",
                     "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "sandbox",
                     "containerRuntimeVersion": "none://", "kubeProxyVersion": ""},
    }


def register(api: Api, name: str, index: int, address: str) -> None:
    node = api.get(f"/api/v1/nodes/{name}")
    if node is None:
        node = api.request("POST", "/api/v1/nodes", node_object(name))
    node["status"] = node_status(name, index, address)
    api.request("PUT", f"/api/v1/nodes/{name}/status", node)


def handler_for(index: int):
    class Kubelet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                return self._send(401, "Unauthorized\n")
            if self.path.split("?")[0] == "/metrics/resource":
                return self._send(200, metrics_text(index, time.time()), "text/plain; version=0.0.4")
            if self.path == "/healthz":
                return self._send(200, "ok")
            return self._send(404, "404 page not found\n")

        def _send(self, code: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):  # quiet: metrics-server scrapes every resolution period
            pass

    return Kubelet


def serve(pki: Path, name: str, index: int, address: str) -> http.server.ThreadingHTTPServer:
    srv = http.server.ThreadingHTTPServer((address, BASE_PORT + index), handler_for(index))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki / f"kubelet-{name}.crt"), str(pki / f"kubelet-{name}.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main(argv: list[str]) -> int:
    ap = daemon_parser()
    ap.add_argument("--nodes", required=True)
    a = ap.parse_args(argv)
    pki = a.dir / "pki"
    api = admin_api(a.dir, a.servers)
    names = a.nodes.split(",")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for i, name in enumerate(names):
        serve(pki, name, i, a.address)
    print(f"kubelets: serving {', '.join(f'{n}:{BASE_PORT + i}' for i, n in enumerate(names))}", flush=True)
    deadline = time.monotonic() + a.max_hours * 3600
    while not stop.is_set() and time.monotonic() < deadline:
        for i, name in enumerate(names):
            try:
                register(api, name, i, a.address)
            except (OSError, ApiError) as e:
                print(f"kubelets: {name}: status update failed: {e}", flush=True)
        stop.wait(HEARTBEAT_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
