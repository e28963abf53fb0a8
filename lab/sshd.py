"""Debian's sshd as a host's SSH server: run in the host's network + mount namespaces (nsenter into the
anchor), with a per-host host key that the tests pin."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab import netns
from lab.proc import LabError, keygen

SSHD = "/usr/sbin/sshd"


def write_config(dir: Path, name: str, *, listen: str, authorized_keys: str, forwarding: bool,
                 set_env: dict[str, str] | None = None, error: type[Exception] = LabError) -> str:
    """dir/sshd_config and dir/ssh_host_ed25519_key (made once); -> the host key as `type base64`.
    `forwarding`: a jump host must forward TCP (ssh -W); `set_env`: variables for every session (SetEnv)."""
    key = dir / "ssh_host_ed25519_key"
    pub = keygen(key, name, error)
    (dir / "sshd_config").write_text(
        f"""Port 22
ListenAddress {listen}
HostKey {key}
PidFile none
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding {"yes" if forwarding else "no"}
PermitTunnel no
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 50
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""
        + "".join(f"SetEnv {k}={v}\n" for k, v in (set_env or {}).items())
    )
    return pub


def argv(dir: Path, anchor_pid: int | str, *, uts: bool = False) -> list[str]:
    """sshd in the foreground, logging to stderr, in the anchor's namespaces."""
    return [*netns.enter_argv(anchor_pid, uts=uts), SSHD, "-D", "-e", "-f", str(dir / "sshd_config")]


def check_installed(error: type[Exception] = LabError) -> None:
    if not Path(SSHD).exists():
        raise error(f"{SSHD} is missing: run `make system-deps` (apt-get install -y openssh-server)")


def start(dir: Path, anchor_pid: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv(dir, anchor_pid), stdout=out, stderr=out, stdin=subprocess.DEVNULL)
