"""A local PostgreSQL server for the Pulumi DIY backend (`postgres://`): `make backend-up` / `backend-down`.

    venv/bin/python -m tools.pg_backend up     # init on first start (role, database, password), start
    venv/bin/python -m tools.pg_backend url    # the PULUMI_BACKEND_URL (no password in it)
    venv/bin/python -m tools.pg_backend down   # stop (the data stays; delete --dir to drop it)

Everything lives in one directory (--dir, PG_BACKEND_DIR; default /var/lib/metrics-aggregation/pg-backend
for root, else ~/.local/state/metrics-aggregation/pg-backend), never in the repo:

    data/    the cluster (PGDATA), owned by the service user
    run/     its unix socket, the server log
    pgpass   role password in libpq's pgpass format, mode 0600, owned by the caller

The server listens on 127.0.0.1 (--port, PG_BACKEND_PORT, default 54329) and its own socket directory;
nothing is started through systemd. PostgreSQL refuses to run as root, so for root the Debian package's
`postgres` user runs it. The role's password is generated on first start and written only to `pgpass`:
the server gets a SCRAM verifier (computed here), so the plaintext is in no SQL statement, log or
command line, and the backend URL names the pgpass file (`passfile=`) instead of carrying it: the
pulumi CLI prints the backend URL in some errors.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import hmac
import os
import pwd
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROLE = "metrics_aggregation"
DATABASE = "metrics_aggregation_state"
DEFAULT_PORT = 54329
# pg_ctl waits at most this long for a start or a stop (a wedged server fails the command, not hangs it)
PG_CTL_TIMEOUT = 60
SCRAM_ITERATIONS = 4096


class BackendError(Exception):
    pass


def default_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/metrics-aggregation/pg-backend")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "metrics-aggregation" / "pg-backend"


def pg_bin_dir() -> Path:
    """The newest Debian PostgreSQL server binaries (PG_BIN_DIR overrides)."""
    if os.environ.get("PG_BIN_DIR"):
        return Path(os.environ["PG_BIN_DIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise BackendError("no PostgreSQL server found under /usr/lib/postgresql: run `make backend-deps` "
                           "(installs the Debian package postgresql) or set PG_BIN_DIR")
    return Path(found[-1]).parent


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq's
    PQencryptPasswordConn makes it): CREATE ROLE ... PASSWORD '<verifier>' never sees the plaintext."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


@dataclass
class PgBackend:
    dir: Path
    port: int = DEFAULT_PORT

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def pgpass(self) -> Path:
        return self.dir / "pgpass"

    @property
    def log(self) -> Path:
        return self.run_dir / "server.log"

    def url(self) -> str:
        """The DIY backend URL: loopback only (no TLS needed), the password read from `pgpass`."""
        return (f"postgres://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"
                f"?sslmode=disable&connect_timeout=10&passfile={self.pgpass}")

    # ------------------------------------------------------------------ running the server binaries
    def _user(self) -> pwd.struct_passwd:
        if os.geteuid() != 0:
            return pwd.getpwuid(os.geteuid())
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise BackendError("running as root needs the `postgres` user of the Debian package postgresql "
                               "(PostgreSQL refuses to run as root): run `make backend-deps`") from None

    def _pg(self, tool: str, *args: str, stdin: str | None = None, timeout: float = PG_CTL_TIMEOUT + 30,
            check: bool = True, bin_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
        """One server binary as the service user (dropped from root; same user otherwise)."""
        u = self._user()
        kw = {"user": u.pw_uid, "group": u.pw_gid, "extra_groups": []} if os.geteuid() == 0 else {}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.run_dir)}
        # cwd: a directory the service user can enter (initdb and psql complain about one they cannot)
        p = subprocess.run([str((bin_dir or pg_bin_dir()) / tool), *args], input=stdin, capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=str(self.dir), **kw)
        if check and p.returncode != 0:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise BackendError(f"{tool} {args[0] if args else ''} -> {p.returncode}: "
                               f"{(p.stdout + p.stderr).strip()[-1500:]}\n{tail}".rstrip())
        return p

    def _psql(self, sql: str) -> str:
        """SQL as the superuser over the unix socket (peer authentication), statements on stdin."""
        u = self._user()
        return self._pg("psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", str(self.run_dir),
                        "-p", str(self.port), "-U", u.pw_name, "-d", "postgres", "-f", "-", stdin=sql).stdout

    # ------------------------------------------------------------------ lifecycle
    def running(self) -> bool:
        return self.data.is_dir() and self._pg("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def _init(self) -> None:
        u = self._user()
        self.dir.mkdir(parents=True, exist_ok=True)
        # the service user must traverse (not list) the directory the caller owns
        self.dir.chmod(0o711)
        for d in (self.data, self.run_dir):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, u.pw_uid, u.pw_gid)
        if self._pg("test", "-w", str(self.data), bin_dir=Path("/usr/bin"), check=False).returncode != 0:
            raise BackendError(f"PG_BACKEND_DIR={self.dir}: the user {u.pw_name} cannot reach {self.data}; every "
                               f"parent directory must be searchable by it (chmod o+x, or a directory outside "
                               f"/root, e.g. the default {default_dir()})")
        if (self.data / "PG_VERSION").exists():
            return
        self._pg("initdb", "-D", str(self.data), "-U", u.pw_name, "-E", "UTF8", "--locale=C.UTF-8",
                 "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions")
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(f"\n# tools/pg_backend.py: loopback TCP and a private socket directory only\n"
                    f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.run_dir}'\npassword_encryption = 'scram-sha-256'\n")

    def _ensure_role(self) -> None:
        """Role and database on first start; the password is generated here and kept only in `pgpass`
        (a new one when either is missing, e.g. a data directory deleted beside an old pgpass)."""
        role = bool(self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'").strip())
        if not (role and self.pgpass.exists()):
            password = secrets.token_urlsafe(32)
            self._psql(f"{'ALTER' if role else 'CREATE'} ROLE {ROLE} LOGIN PASSWORD '{scram_verifier(password)}';")
            tmp = self.pgpass.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"*:*:{DATABASE}:{ROLE}:{password}\n")
            tmp.replace(self.pgpass)
        if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'").strip():
            self._psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE};")

    def up(self) -> None:
        """Init on first start, start unless running, ensure the role: idempotent."""
        self._init()
        if not self.running():
            self._pg("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(PG_CTL_TIMEOUT),
                     "-o", f"-p {self.port}")
        self._ensure_role()

    def down(self) -> None:
        if self.running():
            self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", str(PG_CTL_TIMEOUT))

    def kill(self) -> None:
        """Stop as a crash would (immediate mode: no shutdown checkpoint; WAL recovery on the next start)."""
        self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", str(PG_CTL_TIMEOUT))

    def query(self, sql: str) -> str:
        """Read-only look at the state table as the superuser (tests, operators)."""
        return self._pg("psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", str(self.run_dir), "-p",
                        str(self.port), "-U", self._user().pw_name, "-d", DATABASE, "-c", sql).stdout


def parse_port(value: str) -> int:
    if not value.isdigit() or not 1024 <= int(value) <= 65535:
        raise BackendError(f"PG_BACKEND_PORT (--port) is {value!r}: set it to a free TCP port number 1024-65535 "
                           f"(default {DEFAULT_PORT})")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.pg_backend", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("up", "down", "url", "status"))
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("PG_BACKEND_DIR") or default_dir()))
    ap.add_argument("--port", default=os.environ.get("PG_BACKEND_PORT") or str(DEFAULT_PORT))
    a = ap.parse_args(argv)
    try:
        port = parse_port(a.port)
        b = PgBackend(a.dir.resolve(), port)
        if a.action == "up":
            b.up()
            print(f"PostgreSQL backend up: {b.url()}", file=sys.stderr)
        elif a.action == "down":
            b.down()
        elif a.action == "url":
            if not b.pgpass.exists():
                raise BackendError(f"no backend in {b.dir}: run `make backend-up` first")
            print(b.url())
        else:
            up = b.running()
            print(f"{'running' if up else 'stopped'}: {b.dir}")
            return 0 if up else 3
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
