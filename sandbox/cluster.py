"""The sandbox: a real control plane on this machine, built from network and mount namespaces.

    sb = Sandbox(Path("/run/metrics-aggregation-sandbox"))     # block 198.18.200.0/24, netns prefix masbx
    sb.up(log=print)      # idempotent: a healthy sandbox is left alone, a broken one is rebuilt
    sb.down()             # kills what it started (every process in its namespaces), deletes them and the dir

Topology (B = the block, 200 for `make demo`; the tests pick a free one):
  <prefix>-br     the network: a bridge that every namespace below has a veth on (its own namespace,
                  so the runner's firewall and br_netfilter settings never see the traffic)
  runner          198.18.B.1   the operator: pulumi, kubectl, the tests (a veth from the root namespace)
  <prefix>-ctl    198.18.B.2   etcd (plain HTTP, sandbox only) and kube-controller-manager (garbage collector)
  <prefix>-m1..3  198.18.B.11+ the masters: sshd + a real kube-apiserver each, configured like a binary
                  install (env-file layout, /etc/kubernetes/kube-apiserver.conf), in a private mount
                  namespace, run by lab/supervisor.py and restarted by `/usr/local/sbin/apiserverctl restart`
  <prefix>-pods   198.18.B.20  podrunner.py: runs the metrics-server Deployment's container as a process
                  and registers the Service's EndpointSlice (there is no kubelet or endpoints controller);
                  .21 too: a rolling update starts the new process there before the old one stops
  <prefix>-nodes  198.18.B.30  kubelets.py: emulated nodes (Node objects + /metrics/resource on :10250+i)
Namespaces, sshd, the supervisor, certificates and the etcd / kube-apiserver / kube-controller-manager
command lines are the lab's (lab/). Files: <dir>/pki (lab/pki.py), <dir>/admin.kubeconfig (the
operator's), <dir>/agent.sock (an ssh-agent with the sandbox's SSH key: the stack uses
ssh.agentSocketPath, so no key is in any config file), <dir>/masters/<name>/ (each master's
/etc/kubernetes, state dir, logs), <dir>/sandbox.json (what to kill).
Only addresses in 198.18.0.0/15 are configured.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab import netns, proc, sshd
from lab import pki as pki_mod
from lab.apiserver import apiserver_flags, controller_manager_argv, etcd_argv, etcd_healthy, write_kubeconfig
from lab.kube import Api, ApiError
from lab.proc import LabError, tcp_open
from lab.supervisor import Unit, install_shims

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DIR = Path("/run/metrics-aggregation-sandbox")
DEFAULT_BLOCK = 200
DEFAULT_PREFIX = "masbx"
MASTERS = ("master1", "master2", "master3")
NODES = ("sandbox-node-1", "sandbox-node-2", "sandbox-node-3")
ENV_FILE = "/etc/kubernetes/kube-apiserver.conf"
RESTART_COMMAND = "/usr/local/sbin/apiserverctl restart"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "metrics-server", "kubectl")
SUPERVISOR = REPO / "lab" / "supervisor.py"
# a master's private mounts: inside path -> directory under the master's dir
MOUNTS = {
    "/etc/kubernetes": "etc-kubernetes",
    "/var/lib/metrics-aggregation": "state",
    "/usr/local/sbin": "sbin",
}
Log = Callable[[str], None]


class SandboxError(LabError):
    pass


def sh(*args: str, check: bool = True, timeout: float = 30, error: type[Exception] = SandboxError,
       **kw) -> subprocess.CompletedProcess:
    return proc.sh(*args, check=check, timeout=timeout, error=error, **kw)


def wait_for(pred: Callable[[], object], what: str, timeout: float, interval: float = 0.2,
             error: type[Exception] = SandboxError):
    return proc.wait_for(pred, what, timeout, interval, error)


def free_block_and_prefix(tag: str = "mas") -> tuple[int, str]:
    """For a sandbox beside make demo's: a 198.18.X.0/24 block configured nowhere on this machine (never
    DEFAULT_BLOCK) and a netns prefix <tag><4 hex> no namespace uses (down removes every <prefix>-*)."""
    used = sh("ip", "-4", "-o", "addr", "show", timeout=10).stdout
    netns = sh("ip", "netns", "list", timeout=10).stdout
    for _ in range(200):
        block, prefix = random.randrange(10, 250), f"{tag}{random.randrange(16**4):04x}"
        if block != DEFAULT_BLOCK and f" 198.18.{block}." not in used and f"{prefix}-" not in netns:
            return block, prefix
    raise SandboxError("no free 198.18.X.0/24 block for a sandbox")


def default_bin_dir() -> Path:
    p = sh("bash", str(REPO / "toolchain" / "build.sh"), "bin-dir", timeout=60)
    return Path(p.stdout.strip())


@dataclass
class Sandbox:
    dir: Path = DEFAULT_DIR
    block: int = DEFAULT_BLOCK
    prefix: str = DEFAULT_PREFIX
    bin_dir: Path | None = None
    python: str = sys.executable
    state: dict = field(default_factory=dict)

    # ---- names and addresses
    def ip(self, last: int) -> str:
        return f"198.18.{self.block}.{last}"

    @property
    def runner_ip(self) -> str:
        return self.ip(1)

    @property
    def ctl_ip(self) -> str:
        return self.ip(2)

    @property
    def pods_ip(self) -> str:
        return self.ip(20)

    @property
    def pods_surge_ip(self) -> str:
        """The pods namespace's second address: a new metrics-server process starts there before the old
        one stops (podrunner.py's rolling update)."""
        return self.ip(21)

    @property
    def nodes_ip(self) -> str:
        return self.ip(30)

    @property
    def masters(self) -> dict[str, str]:
        return {name: self.ip(11 + i) for i, name in enumerate(MASTERS)}

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def master_ns(self, name: str) -> str:
        return self.ns(f"m{MASTERS.index(name) + 1}")

    def master_dir(self, name: str) -> Path:
        return self.dir / "masters" / name

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def agent_socket(self) -> Path:
        return self.dir / "agent.sock"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def state_file(self) -> Path:
        return self.dir / "sandbox.json"

    def servers(self) -> tuple[str, ...]:
        return tuple(f"https://{a}:6443" for a in self.masters.values())

    def api(self, timeout: float = 5.0) -> Api:
        return Api(self.servers(), ca=self.pki / "ca.crt", cert=self.pki / "admin.crt", key=self.pki / "admin.key",
                   timeout=timeout)

    def master_api(self, name: str, cert: str = "admin") -> Api:
        """A client of one master only (cert: a stem of pki.py's table)."""
        return Api((f"https://{self.masters[name]}:6443",), ca=self.pki / "ca.crt",
                   cert=self.pki / f"{cert}.crt", key=self.pki / f"{cert}.key")

    def stack_file_text(self) -> str:
        """Pulumi.sandbox.yaml for this sandbox: the committed file, moved to its block and directory."""
        text = (REPO / "Pulumi.sandbox.yaml").read_text()
        return text.replace(f"198.18.{DEFAULT_BLOCK}.", f"198.18.{self.block}.").replace(str(DEFAULT_DIR), str(self.dir))

    def bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    # ---- state
    def _load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_file)

    def _track(self, kind: str, value) -> None:
        self.state.setdefault(kind, [])
        if value not in self.state[kind]:
            self.state[kind].append(value)
        self._save()

    # ---- health
    def problems(self) -> list[str]:
        """What is wrong with a running sandbox ([] = healthy); nothing is started or stopped."""
        st = self._load()
        if not st.get("complete"):
            return ["no complete sandbox here" if not st else "a sandbox start did not finish"]
        out = []
        for name, pid in st.get("pids", {}).items():
            if proc.gone(pid):  # gone, or exited and not yet reaped by whoever started it
                out.append(f"{name} (pid {pid}) is not running")
        for name in MASTERS:
            if not self.master_api(name).ok():
                out.append(f"{name}: kube-apiserver is not ready")
        return out

    # ---- up
    def up(self, log: Log = print, timeout: float = 180) -> None:
        if os.geteuid() != 0:
            raise SandboxError("the sandbox needs root (network and mount namespaces, sshd): run it as root")
        for tool in ("ip", "nsenter", "unshare", "ssh-keygen", "ssh-agent", "ssh-add", "curl", "flock"):
            if not shutil.which(tool):
                raise SandboxError(f"{tool} is missing: run `make system-deps`")
        sshd.check_installed(SandboxError)
        self.bin_dir = self.bin_dir or default_bin_dir()
        missing = [b for b in BINARIES if not (self.bin_dir / b).exists()]
        if missing:
            raise SandboxError(f"missing from {self.bin_dir}: {', '.join(missing)} (bash toolchain/build.sh build {' '.join(missing)})")
        if len(str(self.agent_socket)) > 100:
            raise SandboxError(f"{self.agent_socket}: too long for a unix socket; use a shorter sandbox dir")
        if self.state_file.exists():
            bad = self.problems()
            if not bad:
                self.state = self._load()
                log(f"[sandbox] already up ({self.dir}); `make sandbox-down` to remove it")
                return
            log(f"[sandbox] rebuilding: {'; '.join(bad)}")
            self.down(log)
        elif self._namespaces_present():
            log("[sandbox] removing leftovers of an earlier sandbox")
            self.down(log)
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.state = {"dir": str(self.dir), "block": self.block, "prefix": self.prefix, "netns": [], "pids": {},
                      "masters": self.masters, "bin_dir": str(self.bin_dir)}
        self._save()
        try:
            self._check_block()
            log("[sandbox] certificates (sandbox cluster CA, apiserver serving certs, admin, kubelets)")
            pki_mod.ensure(self.pki, self.masters, self.nodes_ip, list(NODES))
            log(f"[sandbox] network 198.18.{self.block}.0/24 ({self.ns('br')})")
            self._network()
            self._ssh()
            log(f"[sandbox] etcd on {self.ctl_ip}:2379")
            self._etcd(deadline)
            log("[sandbox] kube-apiserver on " + ", ".join(f"{n} {a}" for n, a in self.masters.items()))
            self._masters(deadline)
            self._kubeconfig()
            self._controller_manager()
            log(f"[sandbox] emulated nodes on {self.nodes_ip}, metrics-server pod runner on {self.pods_ip}")
            self._daemons(deadline)
        except BaseException:
            log("[sandbox] start failed; cleaning up (logs stay in " + str(self.dir) + " until the next up)")
            self.down(log, keep_dir=True)
            raise
        self.state["complete"] = True
        self._save()
        log(f"[sandbox] up in {time.monotonic() - t0:.0f}s: KUBECONFIG={self.kubeconfig}")

    def _namespaces_present(self) -> bool:
        return bool(netns.names(f"{self.prefix}-"))

    def _check_block(self) -> None:
        used = sh("ip", "-4", "-o", "addr", "show").stdout
        if f" 198.18.{self.block}." in used:
            raise SandboxError(f"198.18.{self.block}.0/24 is already configured on this machine (another sandbox or test run)")

    def _network(self) -> None:
        br = self.ns("br")
        netns.add(br, SandboxError)
        self._track("netns", br)
        netns.bridge(br, "br0", SandboxError)
        roles = ["ctl", *[f"m{i + 1}" for i in range(len(MASTERS))], "pods", "nodes"]
        addrs = [self.ctl_ip, *self.masters.values(), self.pods_ip, self.nodes_ip]
        for i, (role, addr) in enumerate(zip(roles, addrs, strict=True)):
            ns = self.ns(role)
            netns.add(ns, SandboxError)
            self._track("netns", ns)
            netns.veth(netns.End(br, f"v{i}", bridge="br0"), netns.End(ns, "eth0", f"{addr}/24"), SandboxError)
        sh(*netns.End(self.ns("pods"), "eth0").ip("addr", "add", f"{self.pods_surge_ip}/24", "dev", "eth0"),
           error=SandboxError)
        # the runner: one veth from the root namespace
        root_if = f"{self.prefix}{self.block}"[:15]
        self._track("links", root_if)
        netns.veth(netns.End(None, root_if, f"{self.runner_ip}/24"), netns.End(br, "vroot", bridge="br0"), SandboxError)

    def _spawn(self, name: str, argv: list[str], logfile: Path) -> subprocess.Popen:
        """A daemon that outlives this process (its own session); its pid goes into sandbox.json."""
        logfile.parent.mkdir(parents=True, exist_ok=True)
        out = open(logfile, "ab")  # noqa: SIM115
        p = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
                             cwd=self.dir)
        out.close()
        self.state["pids"][name] = p.pid
        self._save()
        return p

    def _alive(self, name: str) -> None:
        if proc.gone(self.state["pids"][name]):
            log = self.dir / "logs" / f"{name}.log"
            tail = log.read_text(errors="replace")[-2500:] if log.exists() else ""
            raise SandboxError(f"{name} exited:\n{tail}")

    def _ssh(self) -> None:
        key = self.dir / "id_ed25519"
        proc.keygen(key, "metrics-aggregation-sandbox", SandboxError)
        (self.dir / "authorized_keys").write_text((self.dir / "id_ed25519.pub").read_text())
        self.agent_socket.unlink(missing_ok=True)
        self._spawn("ssh-agent", ["ssh-agent", "-D", "-a", str(self.agent_socket)], self.dir / "logs" / "ssh-agent.log")
        wait_for(self.agent_socket.exists, "ssh-agent socket", 10, 0.05)
        sh("ssh-add", "-q", str(key), env={**os.environ, "SSH_AUTH_SOCK": str(self.agent_socket)})

    def _etcd(self, deadline: float) -> None:
        url = f"http://{self.ctl_ip}:2379"
        self._spawn("etcd", ["ip", "netns", "exec", self.ns("ctl"), *etcd_argv(
            self.bin("etcd"), "sandbox", self.dir / "etcd", [url, "http://127.0.0.1:2379"], "http://127.0.0.1:2380",
            "http://127.0.0.1:2381", 512)], self.dir / "logs" / "etcd.log")

        def healthy() -> bool:
            self._alive("etcd")
            return etcd_healthy(url)

        wait_for(healthy, "etcd", max(5.0, deadline - time.monotonic()))

    # ---- masters
    def env_file_text(self, name: str) -> str:
        """The master's kube-apiserver flags, as a binary install keeps them: no aggregation flags."""
        flags = apiserver_flags(
            advertise=self.masters[name], bind="0.0.0.0", port=6443, etcd=f"http://{self.ctl_ip}:2379",
            pki=Path("/etc/kubernetes/pki"), issuer="https://kubernetes.default.svc.cluster.local",
            before=["--allow-privileged=true", "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction"],
            after=["--v=1"])
        body = " \\\n".join(flags)
        return (f"# kube-apiserver flags of {name} (sandbox), read by its unit as EnvironmentFile=\n"
                f"# ExecStart=/usr/local/bin/kube-apiserver $KUBE_APISERVER_OPTS\n"
                f'KUBE_APISERVER_OPTS="{body}"\n')

    def _master_files(self, name: str) -> None:
        d = self.master_dir(name)
        for sub in MOUNTS.values():
            (d / sub).mkdir(parents=True, exist_ok=True)
        etc = d / "etc-kubernetes"
        (etc / "pki").mkdir(exist_ok=True)
        for src, dst in (("ca.crt", "ca.crt"), (f"apiserver-{name}.crt", "apiserver.crt"),
                         (f"apiserver-{name}.key", "apiserver.key"), ("sa.key", "sa.key"), ("sa.pub", "sa.pub")):
            shutil.copyfile(self.pki / src, etc / "pki" / dst)
            os.chmod(etc / "pki" / dst, 0o600 if dst.endswith(".key") else 0o644)
        conf = etc / "kube-apiserver.conf"
        conf.write_text(self.env_file_text(name))
        os.chmod(conf, 0o644)
        (d / "original-kube-apiserver.conf").write_bytes(conf.read_bytes())
        sshd.write_config(d, name, listen=self.masters[name], authorized_keys=str(self.dir / "authorized_keys"),
                          forwarding=False, error=SandboxError)
        install_shims(d / "sbin", d, name, journal="kube-apiserver.log", shims=("apiserverctl", "journalctl"))
        Unit(binary=self.bin("kube-apiserver"), env_file=ENV_FILE).write(d)
        # its own hostname (UTS namespace): kube-apiserver names its identity lease after the hostname, and
        # three apiservers sharing one would fight over one lease
        netns.write_init(d / "init.sh", [(str(d / sub), mp) for mp, sub in MOUNTS.items()],
                         f"{self.python} {SUPERVISOR} {d}", hostname=name)

    def _masters(self, deadline: float) -> None:
        for mp in MOUNTS:
            Path(mp).mkdir(parents=True, exist_ok=True)  # empty mount points on the runner
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for name in MASTERS:
            self._master_files(name)
            self._spawn(f"{name}-supervisor", netns.anchor_argv(self.master_ns(name), self.master_dir(name) / "init.sh",
                                                                uts=True), self.dir / "logs" / f"{name}-supervisor.log")
        for name in MASTERS:
            wait_for(lambda n=name: self._alive(f"{n}-supervisor") or (self.master_dir(n) / "supervisor.pid").exists(),
                     f"{name}: supervisor", 15, 0.05)
            pid = (self.master_dir(name) / "supervisor.pid").read_text().strip()
            self._spawn(f"{name}-sshd", sshd.argv(self.master_dir(name), pid, uts=True),
                        self.dir / "logs" / f"{name}-sshd.log")
        for name, addr in self.masters.items():
            def ready(n=name, a=addr) -> bool:
                self._alive(f"{n}-supervisor")
                return tcp_open(a, 22) and self.master_api(n).ok()
            try:
                wait_for(ready, f"{name}: sshd and kube-apiserver /readyz", max(5.0, deadline - time.monotonic()), 0.3)
            except SandboxError as e:
                tail = (self.master_dir(name) / "kube-apiserver.log").read_text(errors="replace")[-3000:]
                raise SandboxError(f"{e}\n{tail}") from None
        wait_for(lambda: self.api().get("/api/v1/namespaces/kube-system") is not None, "namespace kube-system",
                 max(5.0, deadline - time.monotonic()))

    def host_keys(self) -> dict[str, str]:
        return {n: " ".join((self.master_dir(n) / "ssh_host_ed25519_key.pub").read_text().split()[:2]) for n in MASTERS}

    def _kubeconfig(self) -> None:
        first = next(iter(self.masters.values()))
        write_kubeconfig(self.kubeconfig, "sandbox", f"https://{first}:6443", self.pki, user="sandbox-admin")

    def _controller_manager(self) -> None:
        # podrunner.py registers the Service's endpoints (no endpoints controller)
        self._spawn("kube-controller-manager", ["ip", "netns", "exec", self.ns("ctl"), *controller_manager_argv(
            self.bin("kube-controller-manager"), self.kubeconfig, 10257)], self.dir / "logs" / "kube-controller-manager.log")

    def _daemons(self, deadline: float) -> None:
        env_py = [self.python, "-m"]
        common = ["--dir", str(self.dir), "--servers", ",".join(self.servers())]
        self._spawn("kubelets", ["ip", "netns", "exec", self.ns("nodes"), "env", f"PYTHONPATH={REPO}", *env_py,
                                 "sandbox.kubelets", *common, "--address", self.nodes_ip, "--nodes", ",".join(NODES)],
                    self.dir / "logs" / "kubelets.log")
        self._spawn("podrunner", ["ip", "netns", "exec", self.ns("pods"), "env", f"PYTHONPATH={REPO}", *env_py,
                                  "sandbox.podrunner", *common, "--address", self.pods_ip,
                                  "--surge-address", self.pods_surge_ip,
                                  "--metrics-server", self.bin("metrics-server")],
                    self.dir / "logs" / "podrunner.log")

        def nodes_ready() -> bool:
            self._alive("kubelets")
            self._alive("podrunner")
            try:
                items = (self.api().get("/api/v1/nodes") or {}).get("items", [])
            except (OSError, ApiError):
                return False
            return len(items) == len(NODES)

        wait_for(nodes_ready, "the emulated nodes to register", max(5.0, deadline - time.monotonic()), 0.3)

    # ---- down
    def down(self, log: Log = print, keep_dir: bool = False) -> None:
        st = self._load() or self.state
        prefix = st.get("prefix", self.prefix)
        namespaces = netns.names(f"{prefix}-")
        pids = set(st.get("pids", {}).values())
        for ns in namespaces:
            pids.update(netns.pids(ns))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while pids and time.monotonic() < deadline:
                pids = {p for p in pids if not proc.gone(p)}
                time.sleep(0.1)
        for ns in namespaces:
            netns.delete(ns)
        for link in st.get("links", []):
            netns.delete_link(link)
        if self.dir.exists() and not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if namespaces or st:
            log(f"[sandbox] down: {len(namespaces)} namespaces removed" + ("" if keep_dir else f", {self.dir} deleted"))

