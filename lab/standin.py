"""A stand-in kube-apiserver for the host tier.

    python lab/standin.py HOSTDIR      one apiserver "process", run by lab/supervisor.py inside a test
                                       host's namespaces (lab/hosts.py sets them up): reads the layout's
                                       config file the way systemd / the kubelet would, refuses to start on
                                       a malformed, unknown or refused flag (as kube-apiserver exits on a
                                       bad flag), otherwise serves /readyz over HTTPS: 500 while
                                       "starting", 200 after `startup_seconds`

HOSTDIR/standin.json holds the settings (layout, config path, port, TLS files, timings). Evidence for
the tests, all under HOSTDIR: events.jsonl (listening/ready/exit here, the supervisor's and the
systemctl shim's beside them, wall-clock times on the shared clock), running.json (the flags the current
process started with), apiserver.log (what `journalctl -u kube-apiserver` / `crictl logs` print on this
host), generation (the supervisor's start counter).
A test refuses a flag by writing its name (or name=value) into HOSTDIR/refuse, and makes a process that
runs with a flag flap (once ready: /readyz answers 200 once, then 500) by writing it into HOSTDIR/flap.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

# run as a script by the supervisor (python lab/standin.py ...): the repo root makes `lab` importable
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lab import supervisor  # noqa: E402

# kube-apiserver flags the stand-in accepts (a real subset of `kube-apiserver --help`, v1.34).
KNOWN_FLAGS = set(
    """
admission-control-config-file advertise-address aggregator-reject-forwarding-redirect allow-privileged
anonymous-auth api-audiences apiserver-count audit-log-batch-max-size audit-log-compress audit-log-format
audit-log-maxage audit-log-maxbackup audit-log-maxsize audit-log-mode audit-log-path audit-policy-file
audit-webhook-config-file authentication-config authentication-token-webhook-cache-ttl
authentication-token-webhook-config-file authorization-config authorization-mode
authorization-webhook-config-file bind-address cert-dir client-ca-file cloud-provider contention-profiling
cors-allowed-origins default-not-ready-toleration-seconds default-unreachable-toleration-seconds
delete-collection-workers disable-admission-plugins egress-selector-config-file enable-admission-plugins
enable-aggregator-routing enable-bootstrap-token-auth enable-garbage-collector enable-priority-and-fairness
encryption-provider-config encryption-provider-config-automatic-reload endpoint-reconciler-type
etcd-cafile etcd-certfile etcd-compaction-interval etcd-count-metric-poll-period etcd-keyfile etcd-prefix
etcd-servers etcd-servers-overrides event-ttl external-hostname feature-gates goaway-chance
http2-max-streams-per-connection kubelet-certificate-authority kubelet-client-certificate
kubelet-client-key kubelet-preferred-address-types kubelet-timeout kubernetes-service-node-port
livez-grace-period log-flush-frequency logging-format max-connection-bytes-per-sec max-mutating-requests-inflight
max-requests-inflight min-request-timeout oidc-ca-file oidc-client-id oidc-groups-claim oidc-issuer-url
oidc-username-claim permit-address-sharing permit-port-sharing profiling proxy-client-cert-file
proxy-client-key-file request-timeout requestheader-allowed-names requestheader-client-ca-file
requestheader-extra-headers-prefix requestheader-group-headers requestheader-uid-headers
requestheader-username-headers runtime-config secure-port service-account-extend-token-expiration
service-account-issuer service-account-jwks-uri service-account-key-file service-account-lookup
service-account-max-token-expiration service-account-signing-key-file service-cluster-ip-range
service-node-port-range shutdown-delay-duration shutdown-send-retry-after storage-backend
storage-media-type strict-transport-security-directives tls-cert-file tls-cipher-suites tls-min-version
tls-private-key-file tls-sni-cert-key token-auth-file v vmodule watch-cache watch-cache-sizes
""".split()
)
BOOL_FLAGS = {
    "allow-privileged", "anonymous-auth", "enable-aggregator-routing", "enable-bootstrap-token-auth",
    "enable-garbage-collector", "enable-priority-and-fairness", "profiling", "service-account-lookup",
    "watch-cache", "contention-profiling", "audit-log-compress", "permit-port-sharing",
    "permit-address-sharing", "aggregator-reject-forwarding-redirect",
    "encryption-provider-config-automatic-reload", "service-account-extend-token-expiration",
}
# Files kube-apiserver opens at start for the aggregation layer: missing -> it exits.
CHECKED_FILES = {"requestheader-client-ca-file", "proxy-client-cert-file", "proxy-client-key-file"}
FLAG_RE = re.compile(r"^--([a-z0-9][a-z0-9-]*)(?:=(.*))?$", re.S)


class Refused(Exception):
    pass


def settings(hostdir: Path) -> dict:
    return json.loads((hostdir / "standin.json").read_text())


def event(hostdir: Path, kind: str, **extra) -> None:
    rec = {"t": time.time(), "event": kind, **extra}
    with open(hostdir / "events.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def log(hostdir: Path, msg: str) -> None:
    stamp = time.strftime("%m%d %H:%M:%S", time.gmtime())
    with open(hostdir / "apiserver.log", "a") as f:
        f.write(f"I{stamp}.{int(time.time() * 1e6) % 1000000:06d} {os.getpid()} standin] {msg}\n")


# ---------------------------------------------------------------------------------------- config files
def env_file_args(text: str, var: str) -> list[str]:
    """EnvironmentFile semantics: the sandbox masters' service manager's parser (one implementation)."""
    try:
        return supervisor.env_file_args(text, var)
    except supervisor.BadEnvFile as e:
        raise Refused(str(e)) from None


def unit_args(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    section, execs = "", []
    for line in joined.splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s
            continue
        if section == "[Service]" and re.match(r"^ExecStart\s*=", s):
            execs.append(s.split("=", 1)[1].strip())
    if len(execs) != 1:
        raise Refused(f"kube-apiserver.service: expected exactly one ExecStart=, found {len(execs)}")
    try:
        argv = shlex.split(execs[0])
    except ValueError as e:
        raise Refused(f"kube-apiserver.service: bad ExecStart=: {e}") from None
    return argv[1:]


def static_pod(text: str, container: str = "kube-apiserver") -> tuple[list[str], list[tuple[str, str]]]:
    """(flags, [(mountPath, hostPath)]) of the kube-apiserver container (`container`, in spec.containers;
    initContainers run before it and are not it): its command after the binary, then its args, as the
    kubelet hands them to the process. The kubelet rejects bad YAML."""
    import yaml

    try:
        pod = yaml.safe_load(text)
        spec = pod["spec"]
        ctr = next(c for c in spec["containers"] if c.get("name") == container)
        command = (ctr.get("command") or [])[1:] + (ctr.get("args") or [])
        assert isinstance(command, list) and all(isinstance(x, str) for x in command)
        vols = {v["name"]: v.get("hostPath", {}).get("path") for v in spec.get("volumes") or []}
        names = [m["name"] for m in ctr.get("volumeMounts") or []]
        if len(names) != len(set(names)):
            raise Refused("Pod spec is invalid: duplicate volumeMount name")
        if len(vols) != len(spec.get("volumes") or []):
            raise Refused("Pod spec is invalid: duplicate volume name")
        mounts = []
        for m in ctr.get("volumeMounts") or []:
            if m["name"] not in vols:
                raise Refused(f"Pod spec is invalid: volumeMount {m['name']!r} has no volume")
            mounts.append((m["mountPath"], vols[m["name"]]))
    except Refused:
        raise
    except Exception as e:  # noqa: BLE001 - the kubelet would reject the manifest
        raise Refused(f"kubelet: could not parse the static pod manifest: {e!r}") from None
    return command, mounts


def read_args(hostdir: Path, cfg: dict) -> tuple[list[str], list[tuple[str, str]] | None]:
    layout = cfg["layout"]
    if layout == "systemd-unit":
        # systemd runs the unit as of the last daemon-reload (the systemctl shim copies it there).
        return unit_args((hostdir / "loaded-unit").read_text()), None
    text = Path(cfg["config_path"]).read_text()
    if layout == "env-file":
        return env_file_args(text, cfg.get("env_var", "KUBE_APISERVER_OPTS")), None
    return static_pod(text, cfg.get("container", "kube-apiserver"))


def visible_in_pod(path: str, mounts: list[tuple[str, str]]) -> bool:
    for mount_path, host_path in mounts:
        mp = mount_path.rstrip("/") or "/"
        if host_path and host_path.rstrip("/") == mp and (path == mp or path.startswith(mp + "/")):
            return True
    return False


def listed(hostdir: Path, name: str) -> set[str]:
    """The flags (--name or --name=value) listed one per line in HOSTDIR/<name>."""
    f = hostdir / name
    return {x.strip() for x in f.read_text().splitlines() if x.strip()} if f.exists() else set()


def flaps(hostdir: Path, flags: dict[str, str]) -> bool:
    """Whether this process is to flap: it runs with a flag listed in HOSTDIR/flap."""
    wanted = listed(hostdir, "flap")
    return any(k in wanted or f"{k}={v}" in wanted for k, v in flags.items())


def validate(hostdir: Path, args: list[str], mounts) -> dict[str, str]:
    refuse = set()
    rf = hostdir / "refuse"
    if rf.exists():
        refuse = {x.strip() for x in rf.read_text().splitlines() if x.strip()}
    flags: dict[str, str] = {}
    for a in args:
        m = FLAG_RE.match(a)
        if not m:
            raise Refused(f'Error: unknown command "{a}" for "kube-apiserver" (malformed flag)')
        name, value = m.group(1), m.group(2)
        if name not in KNOWN_FLAGS:
            raise Refused(f"Error: unknown flag: --{name}")
        if name in BOOL_FLAGS:
            if value not in (None, "true", "false"):
                raise Refused(f'Error: invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: parsing "{value}": invalid syntax')
        elif value is None:
            raise Refused(f"Error: flag needs an argument: --{name}")
        if f"--{name}" in refuse or f"--{name}={value}" in refuse:
            raise Refused(f'Error: invalid argument "{value}" for "--{name}" flag: refused by the test')
        if name in CHECKED_FILES:
            if not Path(value).is_file():
                raise Refused(f"Error: open {value}: no such file or directory")
            if mounts is not None and not visible_in_pod(value, mounts):
                raise Refused(f"Error: open {value}: no such file or directory (not mounted into the pod)")
        flags[f"--{name}"] = "true" if value is None else value
    return flags


# ----------------------------------------------------------------------------------------------- serve
def serve(hostdir: Path, gen: int = 1) -> int:
    cfg = settings(hostdir)
    try:
        args, mounts = read_args(hostdir, cfg)
        flags = validate(hostdir, args, mounts)
    except (Refused, OSError) as e:
        log(hostdir, f"E {e}")
        log(hostdir, "kube-apiserver exited: 1")
        event(hostdir, "exit", code=1, reason=str(e))
        return 1
    log(hostdir, f"Starting kube-apiserver with {len(flags)} flags")
    (hostdir / "running.json.tmp").write_text(json.dumps({"pid": os.getpid(), "flags": flags, "args": args}))
    os.replace(hostdir / "running.json.tmp", hostdir / "running.json")
    started = time.monotonic()
    # the host's first boot is quick (lab set-up); every restart takes startup_seconds
    ready_after = float(cfg.get("startup_seconds", 1.0)) if gen > 1 else min(0.5, float(cfg.get("startup_seconds", 1.0)))
    state = {"ready": False, "flap": flaps(hostdir, flags), "served": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            ok = state["ready"] or self.path.startswith("/livez")
            if ok and state["flap"] and self.path.startswith("/readyz"):
                state["served"] += 1
                ok = state["served"] == 1  # 200 once, then 500 for good
            body = b"ok" if ok else b"[-]poststarthook/start-apiextensions-controllers failed: not finished\nreadyz check failed"
            self.send_response(200 if ok else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", int(cfg.get("port", 6443))), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cfg["tls_cert"], cfg["tls_key"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    event(hostdir, "listening", pid=os.getpid())
    time.sleep(max(0.0, ready_after - (time.monotonic() - started)))
    state["ready"] = True
    event(hostdir, "ready", pid=os.getpid())
    log(hostdir, "All post-start hooks finished; /readyz is ok")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), int(os.environ.get("LAB_GENERATION", "1"))))
