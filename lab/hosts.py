"""Test hosts for the host tier: network + mount namespaces running Debian's sshd and a stand-in apiserver.

    lab = Lab.create(tmpdir)               # per-run keys, the stand-in's TLS cert, an address block
    host = lab.add_host("m1", layout="env-file")
    jump = lab.add_host("jump", layout=None); inner = lab.add_host("m2", behind=jump)
    ...
    lab.close()                            # kills what it started (by pid), deletes namespaces + veths

Each host:
  * a network namespace `ma<run><i>` with lo and one veth to the runner (runner 198.18.X.4i+1/30, host
    .4i+2/30), or, `behind` a jump host, a veth to the jump host's namespace only (198.19.X.4i+1/30 on the
    jump side), so the runner has no route to it;
  * a private mount namespace (lab/netns.py; anchored by lab/supervisor.py) in which /etc/kubernetes,
    /etc/systemd/system, /var/lib, /etc/sudoers.d and /usr/local/sbin are bind mounts of per-host
    directories (/var/lib: with the runner's entries bound in, so that /var/lib/metrics-aggregation is
    an ordinary directory the program creates and removes, as on a master). /usr/local/sbin (first on
    root's and sudo's PATH) holds lab/shims: `systemctl` (daemon-reload = copy the unit to what the
    stand-in runs; restart kube-apiserver = restart the stand-in, synchronously), `journalctl` and
    `crictl` (print the stand-in's log), `apiserverctl`;
  * the stand-in apiserver (lab/standin.py) run by the supervisor, as systemd or the kubelet would;
  * Debian's sshd (lab/sshd.py) entered into both namespaces, with a per-host host key (pinned by the
    tests through masters[].hostKey) and the per-run client key.
`samples`: the directory of the layouts' config files a host starts with (SAMPLES: tests/hosts/samples).
Only addresses in 198.18.0.0/15 are ever configured.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lab import netns, proc, sshd, standin
from lab.proc import LabError, kill_pid, kill_tree, tcp_open
from lab.supervisor import Unit, install_shims

# the config files a master of each layout starts with: test data of the host tier
SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "hosts" / "samples"
STANDIN = Path(standin.__file__).resolve()
SUPERVISOR = Path(__file__).resolve().parent / "supervisor.py"
OPS_USER = "maops"  # the non-root SSH user of the sudo tests (created once, shared /etc/passwd)

LAYOUT_FILES = {
    "env-file": ("/etc/kubernetes/kube-apiserver.conf", "kube-apiserver.conf"),
    "systemd-unit": ("/etc/systemd/system/kube-apiserver.service", "kube-apiserver.service"),
    "static-pod": ("/etc/kubernetes/manifests/kube-apiserver.yaml", "kube-apiserver.yaml"),
}
MOUNTS = {
    "/etc/kubernetes": "etc-kubernetes",
    "/etc/systemd/system": "etc-systemd-system",
    # per host, so that the program's state dir is not a mount point (destroy removes it); the runner's
    # own entries are bound in (_var_lib_binds)
    "/var/lib": "var-lib",
    "/etc/sudoers.d": "sudoers.d",
    "/usr/local/sbin": "sbin",
    # authorized_keys, reachable for a non-root user (the lab dir itself is 0700)
    "/run/metrics-aggregation-ssh": "ssh-auth",
}


def sh(*args: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return proc.sh(*args, check=check, timeout=timeout, **kw)


def wait_for(pred, what: str, timeout: float = 10.0, interval: float = 0.05):
    return proc.wait_for(pred, what, timeout, interval)


@dataclass
class Host:
    lab: Lab
    name: str
    index: int
    ns: str
    address: str
    dir: Path
    layout: str | None
    behind: Host | None = None
    supervisor: subprocess.Popen | None = None
    sshd: subprocess.Popen | None = None
    host_key_pub: str = ""
    extra: dict = field(default_factory=dict)

    # ---- paths inside the host, as seen from the runner
    def path(self, inside: str) -> Path:
        """The runner-side path of a file inside the host's mount namespace."""
        for mount, sub in MOUNTS.items():
            if inside == mount or inside.startswith(mount + "/"):
                return self.dir / sub / inside[len(mount) + 1 :]
        raise KeyError(inside)

    @property
    def config_path(self) -> str:
        return LAYOUT_FILES[self.layout][0]

    def config_bytes(self) -> bytes:
        return self.path(self.config_path).read_bytes()

    def config_args(self) -> list[str]:
        """The kube-apiserver arguments the config file holds now (parsed as systemd/the kubelet would)."""
        text = self.config_bytes().decode()
        if self.layout == "env-file":
            return standin.env_file_args(text, "KUBE_APISERVER_OPTS")
        if self.layout == "systemd-unit":
            return standin.unit_args(text)
        return standin.static_pod(text, standin.settings(self.dir).get("container", "kube-apiserver"))[0]

    def events(self) -> list[dict]:
        f = self.dir / "events.jsonl"
        return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []

    def restarts(self) -> int:
        """Restarts asked of the supervisor (restart command, or a changed static-pod manifest)."""
        return sum(1 for e in self.events() if e["event"] == "restart")

    def running_flags(self) -> dict[str, str]:
        return json.loads((self.dir / "running.json").read_text())["flags"]

    def refuse(self, *flags: str) -> None:
        (self.dir / "refuse").write_text("".join(f + "\n" for f in flags))

    def flap(self, *flags: str) -> None:
        """An apiserver started with one of these flags answers /readyz 200 once, then 500."""
        (self.dir / "flap").write_text("".join(f + "\n" for f in flags))

    def down_intervals(self) -> list[tuple[float, float]]:
        """[restart, next ready] intervals: when this host's apiserver did not answer 200."""
        out, down = [], None
        for e in self.events():
            if e["event"] == "restart" and down is None:
                down = e["t"]
            elif e["event"] == "ready" and down is not None:
                out.append((down, e["t"]))
                down = None
        if down is not None:
            out.append((down, float("inf")))
        return out

    def put_file(self, inside: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        """Write a file inside the host as its admin would have left it (parents 0755, then mode, owner)."""
        target = self.path(inside)
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        target.write_bytes(data)
        os.chown(target, uid, gid)
        os.chmod(target, mode)

    def file_state(self, inside: str) -> tuple[bytes, int, int, int] | None:
        """(bytes, mode, uid, gid) of a file inside the host; None when it does not exist."""
        target = self.path(inside)
        if not target.exists():
            return None
        st = os.stat(target)
        return target.read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid

    def readyz(self) -> int:
        """HTTP status of https://127.0.0.1:6443/readyz inside the host (0: no answer)."""
        p = sh("ip", "netns", "exec", self.ns, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
               "--max-time", "3", "https://127.0.0.1:6443/readyz", check=False)
        return int(p.stdout or 0)

    def wait_ready(self, timeout: float = 15) -> None:
        wait_for(lambda: self.readyz() == 200, f"{self.name} readyz 200", timeout, 0.1)

    # ---- processes
    def start_sshd(self) -> None:
        assert self.supervisor
        self.sshd = sshd.start(self.dir, self.supervisor.pid, self.dir / "sshd.log")
        probe = self.behind.ns if self.behind else None

        def up() -> bool:
            if self.sshd.poll() is not None:
                raise LabError(f"sshd on {self.name} exited: {(self.dir / 'sshd.log').read_text()[-2000:]}")
            if probe:
                return sh("ip", "netns", "exec", probe, "bash", "-c", f"exec 3<>/dev/tcp/{self.address}/22", check=False).returncode == 0
            return tcp_open(self.address, 22)

        wait_for(up, f"sshd on {self.name} ({self.address}:22)", 10)

    def kill_sshd(self) -> None:
        """Cut SSH: kill the listening sshd and every connection it serves."""
        if not self.sshd:
            return
        kill_tree(self.sshd.pid)
        self.sshd.wait(5)
        self.sshd = None

    def stop(self) -> None:
        if self.sshd:
            self.kill_sshd()
        # everything still running in the namespace (script runs, the stand-in, the supervisor)
        pids = netns.pids(self.ns)
        if self.supervisor and self.supervisor.poll() is None:
            kill_pid(self.supervisor.pid)
            try:
                self.supervisor.wait(5)
            except subprocess.TimeoutExpired:
                kill_pid(self.supervisor.pid, signal.SIGKILL)
        for pid in pids:
            kill_pid(pid, signal.SIGKILL)


class Lab:
    def __init__(self, root: Path, samples: Path = SAMPLES):
        self.root = root
        self.samples = samples
        self.run_id = f"{random.randrange(16**4):04x}"
        self.hosts: list[Host] = []
        self.block = self._free_block()
        self.client_key = root / "id_ed25519"
        self._veths: list[str] = []
        self._netns: list[str] = []
        self._routes: list[str] = []

    # ---- set-up
    @classmethod
    def create(cls, root: Path, samples: Path = SAMPLES) -> Lab:
        if os.geteuid() != 0:
            raise LabError("the host tier needs root (network and mount namespaces, sshd); run it as root")
        for tool in ("ip", "nsenter", "unshare", "ssh", "ssh-keygen", "curl", "sudo"):
            if not shutil.which(tool):
                raise LabError(f"{tool} is missing: run `make system-deps` (apt-get install -y openssh-server openssh-client iproute2 util-linux curl sudo)")
        sshd.check_installed()
        lab = cls(root, samples)
        probe = f"maprobe{lab.run_id}"
        p = sh("ip", "netns", "add", probe, check=False)
        if p.returncode != 0:
            raise LabError(f"cannot create a network namespace (`ip netns add` failed: {p.stderr.strip()}); the host tier needs CAP_SYS_ADMIN/CAP_NET_ADMIN")
        sh("ip", "netns", "del", probe, check=False)
        proc.keygen(lab.client_key, f"hosts-{lab.run_id}")
        (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
        os.chmod(root / "authorized_keys", 0o644)
        lab._tls()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for mount in MOUNTS:
            Path(mount).mkdir(parents=True, exist_ok=True)  # empty mount points on the runner
        return lab

    def _free_block(self) -> int:
        used = sh("ip", "-4", "-o", "addr", "show").stdout
        for _ in range(200):
            x = random.randrange(256)
            if f"198.18.{x}." not in used and f"198.19.{x}." not in used:
                return x
        raise LabError("no free 198.18.X.0/24 block")

    def _tls(self) -> None:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "standin-apiserver")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256())
        )
        (self.root / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.root / "tls.key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        os.chmod(self.root / "tls.key", 0o600)

    def ensure_ops_user(self) -> str:
        """A non-root user for the sudo tests (shared /etc/passwd); sudo rights only inside test hosts."""
        if sh("id", "-u", OPS_USER, check=False).returncode != 0:
            sh("useradd", "--system", "--no-create-home", "--shell", "/bin/bash", OPS_USER)
        sh("usermod", "-p", "*", OPS_USER)  # not locked: sshd (UsePAM no) refuses '!' accounts
        return OPS_USER

    def add_host(self, name: str, layout: str | None = "env-file", *, behind: Host | None = None,
                 sample: str | None = None, startup_seconds: float = 0.6, sudo_user: str | None = None,
                 files: dict[str, tuple[bytes, int, int, int]] | None = None, kubelet_delay: float = 0.2,
                 sshd_env: dict[str, str] | None = None, container: str = "kube-apiserver") -> Host:
        """`files`: inside path -> (bytes, mode, uid, gid), on the host before its apiserver first starts
        (the state an earlier, hand-made setup left behind). `kubelet_delay`: how long the static-pod
        "kubelet" takes to act on a changed manifest. `sshd_env`: variables sshd sets for every session
        (SetEnv), e.g. a proxy in the master's environment. `container`: static-pod, the name of the apiserver
        container in the manifest."""
        i = len(self.hosts)
        if i >= 60:
            raise LabError("at most 60 hosts per lab")
        ns = f"ma{self.run_id}{i:02d}"
        hostdir = self.root / f"host-{i:02d}-{name}"
        hostdir.mkdir()
        for sub in MOUNTS.values():
            (hostdir / sub).mkdir()
        netns.add(ns)
        self._netns.append(ns)
        if behind is None:
            runner_if, host_if = f"ma{self.run_id}{i:02d}r", f"ma{self.run_id}{i:02d}h"
            self._veths.append(runner_if)
            netns.veth(netns.End(None, runner_if, f"198.18.{self.block}.{4 * i + 1}/30"),
                       netns.End(ns, host_if, f"198.18.{self.block}.{4 * i + 2}/30"))
            address = f"198.18.{self.block}.{4 * i + 2}"
        else:
            if not self._routes:
                # the runner has no path to hosts behind a jump host: make that explicit (and keep their
                # addresses from ever leaving through the runner's default route)
                sh("ip", "route", "add", "unreachable", f"198.19.{self.block}.0/24")
                self._routes.append(f"198.19.{self.block}.0/24")
            netns.veth(netns.End(behind.ns, f"ma{self.run_id}{i:02d}j", f"198.19.{self.block}.{4 * i + 1}/30"),
                       netns.End(ns, f"ma{self.run_id}{i:02d}h", f"198.19.{self.block}.{4 * i + 2}/30"))
            address = f"198.19.{self.block}.{4 * i + 2}"
        host = Host(self, name, i, ns, address, hostdir, layout, behind)
        self.hosts.append(host)
        self._write_host_files(host, sample, startup_seconds, sudo_user, kubelet_delay, sshd_env or {}, container)
        for inside, (data, mode, uid, gid) in (files or {}).items():
            host.put_file(inside, data, mode, uid, gid)
        self._start(host)
        return host

    def _write_host_files(self, h: Host, sample: str | None, startup_seconds: float, sudo_user: str | None,
                          kubelet_delay: float, sshd_env: dict[str, str], container: str) -> None:
        d = h.dir
        h.host_key_pub = sshd.write_config(d, h.name, listen="0.0.0.0", forwarding=True, set_env=sshd_env,
                                           authorized_keys="/run/metrics-aggregation-ssh/authorized_keys")
        shutil.copyfile(self.root / "authorized_keys", d / "ssh-auth" / "authorized_keys")
        os.chmod(d / "ssh-auth" / "authorized_keys", 0o644)
        if sudo_user:
            rule = d / "sudoers.d" / "maops"
            rule.write_text(f"{sudo_user} ALL=(root) NOPASSWD: ALL\n")
            os.chmod(rule, 0o440)
        if h.layout:
            inside, default_sample = LAYOUT_FILES[h.layout]
            target = h.path(inside)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.samples / (sample or default_sample), target)
            os.chmod(target, 0o644)
            (d / "loaded-unit").write_bytes(target.read_bytes() if h.layout == "systemd-unit" else b"")
        (d / "standin.json").write_text(json.dumps({
            "layout": h.layout or "none", "config_path": str(h.path(h.config_path)) if h.layout else "",
            "port": 6443, "tls_cert": str(self.root / "tls.crt"), "tls_key": str(self.root / "tls.key"),
            "startup_seconds": startup_seconds, "container": container,
        }))
        # the stand-in's own log is the journal; the supervisor's notes and the process output go aside
        Unit(command=[sys.executable, str(STANDIN), str(d)], log="serve.out", stop_timeout=5, restart_sec=None,
             watch=str(h.path(h.config_path)) if h.layout == "static-pod" else None,
             watch_delay=kubelet_delay).write(d)
        install_shims(d / "sbin", d, h.name, journal="apiserver.log", restart_wait=10,
                      unit_file=h.path(LAYOUT_FILES["systemd-unit"][0]),
                      shims=("apiserverctl", "systemctl", "journalctl") + (("crictl",) if h.layout == "static-pod" else ()))

    @staticmethod
    def _var_lib_binds(h: Host) -> list[str]:
        """Mount commands that bind the runner's /var/lib entries (all but the program's state dir) into the
        host's own /var/lib before that is mounted (recursively) over /var/lib; symbolic links are copied."""
        root, lines = h.dir / MOUNTS["/var/lib"], []
        for e in sorted(os.scandir("/var/lib"), key=lambda e: e.name):
            dst = root / e.name
            if e.name == "metrics-aggregation":
                continue
            if e.is_symlink():
                os.symlink(os.readlink(e.path), dst)
                continue
            if e.is_dir():
                dst.mkdir()
            elif e.is_file():
                dst.touch()
            else:
                continue
            lines.append(f"mount --bind {shlex.quote(e.path)} {shlex.quote(str(dst))}")
        return lines

    def _start(self, h: Host) -> None:
        mounts = [(str(h.dir / sub), mp) for mp, sub in MOUNTS.items()]
        command = f"{sys.executable} {SUPERVISOR} {h.dir}" if h.layout else "sleep infinity"
        netns.write_init(h.dir / "init.sh", mounts, command, before=self._var_lib_binds(h))
        log = open(h.dir / "supervisor.log", "ab")  # noqa: SIM115
        h.supervisor = subprocess.Popen(netns.anchor_argv(h.ns, h.dir / "init.sh"),
                                        stdout=log, stderr=log, stdin=subprocess.DEVNULL)

        def mounted() -> bool:
            if h.supervisor.poll() is not None:
                raise LabError(f"{h.name}: the namespace anchor exited: {(h.dir / 'supervisor.log').read_text()[-2000:]}")
            if h.layout is None:
                try:
                    return os.readlink(f"/proc/{h.supervisor.pid}/exe").endswith("sleep")
                except OSError:
                    return False
            return (h.dir / "supervisor.pid").exists()

        wait_for(mounted, f"{h.name}: namespaces + supervisor", 10)
        if h.layout:
            h.wait_ready(15)
        h.start_sshd()

    def known_hosts(self) -> Path:
        f = self.root / "known_hosts"
        f.write_text("".join(f"{h.address} {h.host_key_pub}\n" for h in self.hosts))
        return f

    # ---- teardown
    def close(self) -> None:
        for h in reversed(self.hosts):
            try:
                h.stop()
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        for ns in reversed(self._netns):
            netns.delete(ns)
        for v in self._veths:
            netns.delete_link(v)
        for r in self._routes:
            sh("ip", "route", "del", "unreachable", r, check=False)
