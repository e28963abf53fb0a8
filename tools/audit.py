"""Drift audit of a deployed stack: do the masters and the cluster still hold what the stack put there?

    make audit STACK=dev                     # table; exit 0 clean, 1 drift, 2 usage/config/access error
    make audit STACK=dev AUDIT_ARGS=--json   # the same findings as JSON, for CI
    make repair STACK=dev                    # audit, re-run the drifted masters' stored steps, audit again

    (under the toolchain's env: venv/bin/python -m tools.audit --stack dev [--json] [--repair] [--cwd DIR])

It reads the stack's config and outputs through the pulumi CLI on $PATH (`pulumi config --json
--show-secrets`, `pulumi stack output --json`), then, strictly read-only:

* on every master, over SSH with the stack's own settings (one bounded call per master, in parallel): the
  value of each flag the program sets (components/apiserver.py apiserver_flags), read with the config
  editor's `list` mode (the host script's `check` action is not used: it takes the host lock and makes a
  work dir in the state dir, so it writes); the sha256 of the CA and proxy-client certificate files against
  the `aggregatorCaCertPem` / `proxyClientCertPem` outputs as install-certs writes them; that the key file's
  public key is the certificate's (openssl on the master prints only the public half; the key never leaves
  the master); modes and owners; /readyz (as the host script polls it).
* on the cluster (components/kube_access.py): the APIService is Available and its caBundle is the
  `metricsServerServingCaCertPem` output; metrics-server's Deployment has the image and args the program
  sets (components/metrics_server.py).

`--repair` (docs/audit.md says why this and not `pulumi up`): for every master with drifted flags or
certificate files, in rollout order, it re-runs exactly the `create` commands the state holds for that
master's certs step (its stdin, a secret, piped from `pulumi stack export --show-secrets`, never printed)
and then its flags step: the same idempotent commands the last `up` ran. Drifted cluster objects get a
`pulumi up --refresh --target` of those objects. Then it audits again and exits with that audit's status.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components import contract

REPO = Path(__file__).resolve().parents[1]
OK, DRIFT, ERROR = "OK", "DRIFT", "ERROR"
CLUSTER = "cluster"
# what re-running which stored step of a master repairs (Finding.repair)
FLAGS_STEP, CERTS_STEP, CLUSTER_UP = "flags", "certs", "up"
EXIT_CLEAN, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2
PULUMI_TIMEOUT = 120
PROBE_TIMEOUT = 60  # one master's whole read-only probe (SSH connect included)
DEFAULT_CONTAINER = "kube-apiserver"  # the host script's --container default
SHOWN = 56  # table cell width for expected/found


class AuditError(Exception):
    """A usage, config or access problem: exit 2. The message names the key or the command, never a secret."""


# --- findings (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    target: str  # a master's name, or "cluster"
    object: str  # the flag, file or Kubernetes object
    check: str
    expected: str
    found: str
    status: str  # OK | DRIFT | ERROR (could not be checked)
    repair: str = ""  # the step whose re-run repairs it (FLAGS_STEP, CERTS_STEP, CLUSTER_UP), "" none


def _finding(target: str, obj: str, check: str, expected: str, found: str, repair: str = "") -> Finding:
    return Finding(target, obj, check, expected, found, OK if expected == found else DRIFT, repair)


def parse_flag_listing(text: str) -> dict[str, str | None]:
    """The editor's `list` output (NAME<TAB>VALUE, or NAME alone for a bare flag) -> {name: value or None};
    the last occurrence wins, as in kube-apiserver."""
    flags: dict[str, str | None] = {}
    for line in text.splitlines():
        if not line.startswith("--"):
            continue
        name, tab, value = line.partition("\t")
        flags[name] = value if tab else None
    return flags


def compare_flags(master: str, expected: Mapping[str, str], found: Mapping[str, str | None]) -> list[Finding]:
    """One finding per flag the program sets on `master`."""
    out = []
    for name, want in expected.items():
        if name not in found:
            got = "(not set)"
        elif found[name] is None:
            got = want if want == "true" else "(set without a value)"  # a bare boolean flag means true
        else:
            got = str(found[name])
        out.append(_finding(master, name, "flag value", want, got, FLAGS_STEP))
    return out


def written_pem(text: str) -> bytes:
    """The bytes install-certs writes for PEM `text`: its lines without CR, blank lines between blocks
    dropped, every line ended by a newline (for one block: apiserver._pem_bundle's "ends with a newline").
    A CA bundle (two CAs during a rotation) is compared as one whole file this way."""
    lines, inside = [], False
    for line in text.replace("\r\n", "\n").split("\n"):
        if not inside and not line.strip():
            continue
        if line.startswith("-----BEGIN "):
            inside = True
        elif line.startswith("-----END "):
            inside = False
        lines.append(line)
    return "".join(f"{line}\n" for line in lines).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def public_key_sha256(cert_pem: str) -> str:
    """sha256 of the certificate's SubjectPublicKeyInfo (DER): what `openssl pkey -pubout -outform DER`
    prints for its private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha256_hex(der)


@dataclass(frozen=True)
class FileFacts:
    """One PEM file on a master, as the probe saw it."""

    state: str  # "file", "missing", "symlink", "not a regular file", "error" (the probe could not read it)
    mode: str = ""  # octal, e.g. "644"
    uid: str = ""
    gid: str = ""
    user: str = ""
    group: str = ""
    sha256: str = ""  # certificates only (never the key's)
    error: str = ""  # state "error": what failed


def _owner_matches(expected: str, facts: FileFacts) -> bool:
    """USER:GROUP, each a name or a numeric id (apiserver.keyOwner), against the file's owner."""
    user, _, group = expected.partition(":")
    return user in (facts.user, facts.uid) and group in (facts.group, facts.gid)


@dataclass(frozen=True)
class Writer:
    """Who install-certs runs as on a master (the probe's `@id`: the same login and sudo as the steps)."""

    uid: str
    gid: str
    user: str
    group: str


ROOT_WRITER = Writer("0", "0", "root", "root")


def expected_owner(writer: Writer | None, key_owner: str | None, is_key: bool) -> str | None:
    """install-certs' rule: every file is owned by the user running it and its group (root: root:root), the
    key by apiserver.keyOwner when that is set. None: the writer is unknown (the probe could not tell)."""
    if is_key and key_owner:
        return key_owner
    if writer is None:
        return None
    return "root:root" if writer.uid == "0" else f"{writer.user}:{writer.group}"


def compare_files(master: str, files: Mapping[str, FileFacts], *, ca_pem: str, cert_pem: str,
                  key_public_sha256: str | None, key_owner: str | None, writer: Writer | None = ROOT_WRITER,
                  key_public_error: str = "") -> list[Finding]:
    """The three PEM files (contract.PEM_FILES) against the outputs: content, mode, owner; the key's public
    half against the certificate's (key_public_sha256 None: no openssl on the master, an ERROR; so is
    key_public_error, openssl failing on the key). A file the probe could not read is an ERROR, never DRIFT
    (a repair would not clear it)."""
    want_sha = {contract.CA_CERT_FILE: sha256_hex(written_pem(ca_pem)),
                contract.PROXY_CERT_FILE: sha256_hex(written_pem(cert_pem))}
    out: list[Finding] = []
    for name in contract.PEM_FILES:
        facts = files.get(name, FileFacts("missing"))
        is_key = name == contract.PROXY_KEY_FILE
        if facts.state == "error":
            out.append(Finding(master, name, "readable", "yes", facts.error or "(the probe could not read it)", ERROR))
            continue
        if facts.state != "file":
            out.append(Finding(master, name, "regular file", "present", facts.state, DRIFT, CERTS_STEP))
            continue
        if is_key:
            want_pub = public_key_sha256(cert_pem)
            if key_public_error:
                out.append(Finding(master, name, "public key = the cert's", f"sha256:{want_pub}",
                                   f"(cannot tell: {key_public_error})", ERROR))
            elif key_public_sha256 is None:
                out.append(Finding(master, name, "public key = the cert's", f"sha256:{want_pub}",
                                   "(cannot tell: no openssl on the master)", ERROR))
            else:
                out.append(_finding(master, name, "public key = the cert's", f"sha256:{want_pub}",
                                    f"sha256:{key_public_sha256}", CERTS_STEP))
        else:
            out.append(_finding(master, name, "sha256 = state", f"sha256:{want_sha[name]}", f"sha256:{facts.sha256}",
                                CERTS_STEP))
        out.append(_finding(master, name, "mode", "600" if is_key else "644", facts.mode, CERTS_STEP))
        owner = expected_owner(writer, key_owner, is_key)
        found_owner = f"{facts.user}:{facts.group}" if facts.user else f"{facts.uid}:{facts.gid}"
        if owner is None:
            out.append(Finding(master, name, "owner", "(the user install-certs runs as)", found_owner, ERROR))
            continue
        ok = _owner_matches(owner, facts) or (owner == "root:root" and (facts.uid, facts.gid) == ("0", "0")) or (
            writer is not None and owner == expected_owner(writer, None, False)
            and (facts.uid, facts.gid) == (writer.uid, writer.gid))
        out.append(Finding(master, name, "owner", owner, found_owner, OK if ok else DRIFT, CERTS_STEP))
    return out


def compare_readyz(master: str, url: str, code: str) -> Finding:
    found = "no answer" if code in ("", "000") else f"HTTP {code}"
    return Finding(master, "kube-apiserver", f"ready ({url})", "HTTP 200", found, OK if code == "200" else DRIFT)


def _condition(obj: Mapping[str, Any], kind: str) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            reason = f" ({c.get('reason')})" if c.get("status") != "True" and c.get("reason") else ""
            return f"{c.get('status')}{reason}"
    return "(no condition)"


def compare_api_service(name: str, obj: Mapping[str, Any] | None, serving_ca_pem: str) -> list[Finding]:
    what = f"APIService {name}"
    if obj is None:
        return [Finding(CLUSTER, what, "exists", "present", "(not found)", DRIFT, CLUSTER_UP)]
    spec = obj.get("spec") or {}
    try:
        bundle = base64.b64decode(spec.get("caBundle") or "", validate=True)
        found = f"sha256:{sha256_hex(written_pem(bundle.decode()))}" if bundle else "(empty)"
    except (ValueError, UnicodeDecodeError):
        found = "(not base64 PEM)"
    return [
        Finding(CLUSTER, what, "Available", "True", _condition(obj, "Available"),
                OK if _condition(obj, "Available") == "True" else DRIFT),
        _finding(CLUSTER, what, "caBundle = metricsServerServingCaCertPem",
                 f"sha256:{sha256_hex(written_pem(serving_ca_pem))}", found, CLUSTER_UP),
        _finding(CLUSTER, what, "insecureSkipTLSVerify", "false", str(bool(spec.get("insecureSkipTLSVerify"))).lower(),
                 CLUSTER_UP),
    ]


def compare_deployment(namespace: str, name: str, obj: Mapping[str, Any] | None, image: str,
                       args: Sequence[str]) -> list[Finding]:
    what = f"Deployment {namespace}/{name}"
    if obj is None:
        return [Finding(CLUSTER, what, "exists", "present", "(not found)", DRIFT, CLUSTER_UP)]
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    c = next((c for c in containers if c.get("name") == name), None)
    if c is None:
        return [Finding(CLUSTER, what, f"container {name}", "present", "(not found)", DRIFT, CLUSTER_UP)]
    return [
        _finding(CLUSTER, what, "image", image, str(c.get("image")), CLUSTER_UP),
        _finding(CLUSTER, what, "args", " ".join(args), " ".join(c.get("args") or []), CLUSTER_UP),
    ]


def exit_code(findings: Iterable[Finding]) -> int:
    """2 when something could not be checked (the audit is incomplete), else 1 on drift, else 0."""
    statuses = {f.status for f in findings}
    return EXIT_ERROR if ERROR in statuses else EXIT_DRIFT if DRIFT in statuses else EXIT_CLEAN


def _cell(text: str) -> str:
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def render_table(findings: Sequence[Finding]) -> str:
    rows = [("MASTER/OBJECT", "CHECK", "EXPECTED", "FOUND", "RESULT")]
    rows += [(f"{f.target} {f.object}", f.check, _cell(f.expected), _cell(f.found), f.status) for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    counts = {s: sum(f.status == s for f in findings) for s in (OK, DRIFT, ERROR)}
    lines.append(f"{len(findings)} checks: {counts[OK]} OK, {counts[DRIFT]} DRIFT, {counts[ERROR]} ERROR")
    return "\n".join(lines) + "\n"


def to_json(stack: str, findings: Sequence[Finding], seconds: float) -> str:
    code = exit_code(findings)
    return json.dumps({"stack": stack, "exitCode": code, "clean": code == EXIT_CLEAN, "seconds": round(seconds, 3),
                       "drift": sorted({f.target for f in findings if f.status == DRIFT}),
                       "findings": [asdict(f) for f in findings]}, indent=2) + "\n"


# --- the stack: config and outputs through the pulumi CLI ---------------------------------------------


@dataclass
class Pulumi:
    """The pulumi CLI on $PATH, in the project dir `cwd`, for one stack."""

    stack: str
    cwd: Path
    binary: str = "pulumi"

    def run(self, *args: str, stdin: str | None = None, timeout: float = PULUMI_TIMEOUT,
            capture: bool = True) -> str:
        argv = [self.binary, *args, "--stack", self.stack, "--non-interactive"]
        try:
            # not captured (a repair's `up`): its progress goes to stderr, stdout stays the audit's own
            p = subprocess.run(argv, cwd=self.cwd, input=stdin, text=True, timeout=timeout,
                               stdout=subprocess.PIPE if capture else sys.stderr, stderr=subprocess.PIPE if capture else None)
        except FileNotFoundError:
            raise AuditError(f"{self.binary}: not found; run through `make audit` (it sources "
                             "`bash toolchain/build.sh env`, which puts the built pulumi on PATH)") from None
        except subprocess.TimeoutExpired:
            raise AuditError(f"`pulumi {args[0]} {args[1] if len(args) > 1 else ''}` did not finish in {timeout}s") from None
        if p.returncode != 0:
            err = (p.stderr or "").strip().splitlines()[-3:] if capture else []
            raise AuditError(f"`pulumi {' '.join(a for a in args if not a.startswith('--show'))} --stack {self.stack}` "
                             f"failed ({p.returncode}): {' '.join(err)}")
        return p.stdout if capture else ""

    def json(self, *args: str) -> Any:
        text = self.run(*args)
        try:
            return json.loads(text)
        except ValueError:
            raise AuditError(f"`pulumi {' '.join(args[:2])}` did not print JSON") from None


@dataclass
class Stack:
    settings: Any  # components.config.Settings
    kube: dict[str, Any]  # the kubernetes:* values
    outputs: dict[str, Any]
    project_dir: Path


def config_values(doc: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """`pulumi config --json` -> {key: value} of one namespace (objectValue when it is structured)."""
    out = {}
    for full, entry in doc.items():
        ns, _, key = full.partition(":")
        if ns == namespace and isinstance(entry, Mapping):
            out[key] = entry["objectValue"] if "objectValue" in entry else entry.get("value")
    return out


REQUIRED_OUTPUTS = (contract.OUTPUT_AGGREGATOR_CA_CERT_PEM, contract.OUTPUT_PROXY_CLIENT_CERT_PEM,
                    contract.OUTPUT_METRICS_API_SERVICE, contract.OUTPUT_METRICS_SERVER_NAMESPACE)


def load_stack(pulumi: Pulumi) -> Stack:
    from components import config as config_mod

    doc = pulumi.json("config", "--json", "--show-secrets")
    try:
        settings = config_mod.parse(config_values(doc, contract.NAMESPACE), base_dir=pulumi.cwd)
    except config_mod.ConfigError as e:
        raise AuditError(str(e)) from None
    outputs = pulumi.json("stack", "output", "--json")
    missing = [k for k in REQUIRED_OUTPUTS if not outputs.get(k)]
    if settings.apiserver.manage and missing:
        raise AuditError(f"stack {pulumi.stack} has no output {', '.join(missing)}: run `make up STACK={pulumi.stack}` "
                         "first (the audit compares the masters with what the last up wrote)")
    return Stack(settings, config_values(doc, "kubernetes"), outputs, pulumi.cwd)


# --- SSH ---------------------------------------------------------------------------------------------


def _alias(master: str) -> str:
    return f"audit-{master}"


BASTION_ALIAS = "audit-bastion"


def known_hosts(settings: Any) -> str:
    """The pinned host keys, each under the alias its connection uses (HostKeyAlias)."""
    lines = [f"{_alias(m.name)} {' '.join(m.host_key.split()[:2])}" for m in settings.masters if m.host_key]
    b = settings.ssh.bastion
    if b and b.host_key:
        lines.append(f"{BASTION_ALIAS} {' '.join(b.host_key.split()[:2])}")
    return "".join(f"{line}\n" for line in lines)


def ssh_config(settings: Any, *, key_file: str | None, bastion_key_file: str | None, known_hosts_file: str) -> str:
    """An ssh_config (used with -F, nothing else read) reaching every master as `audit-<name>`, as the
    stack's pulumi-command connections do: user, port, key or agent, pinned host key, bastion. Never a
    prompt: BatchMode, except that a key with ssh.privateKeyPassword needs ssh's askpass (BatchMode would
    refuse it), which `Ssh` points at the passphrase; password logins stay off either way."""
    ssh = settings.ssh
    timeout = ssh.per_dial_timeout

    def block(alias: str, host: str, port: int, user: str, key: str | None, pinned: bool) -> list[str]:
        lines = [f"Host {alias}", f"  HostName {host}", f"  Port {port}", f"  User {user}", f"  HostKeyAlias {alias}",
                 f"  BatchMode {'no' if ssh.private_key_password else 'yes'}", "  PasswordAuthentication no",
                 "  KbdInteractiveAuthentication no", f"  ConnectTimeout {timeout}", "  ServerAliveInterval 5", "  ServerAliveCountMax 3",
                 f"  UserKnownHostsFile {known_hosts_file}", "  GlobalKnownHostsFile /dev/null",
                 "  UpdateHostKeys no", "  ForwardAgent no", "  ClearAllForwardings yes", "  LogLevel ERROR",
                 f"  StrictHostKeyChecking {'yes' if pinned else 'no'}"]
        if key:
            lines += [f"  IdentityFile {key}", "  IdentitiesOnly yes"]
        lines.append(f"  IdentityAgent {ssh.agent_socket_path}" if ssh.agent_socket_path else "  IdentityAgent none")
        return lines

    out: list[str] = []
    if ssh.bastion:
        b = ssh.bastion
        out += block(BASTION_ALIAS, b.host, b.port, b.user or ssh.user, bastion_key_file or key_file, bool(b.host_key))
    for m in settings.masters:
        out += block(_alias(m.name), m.address, m.port or ssh.port, m.user or ssh.user, key_file, bool(m.host_key))
        if ssh.bastion:
            out.append(f"  ProxyJump {BASTION_ALIAS}")
    return "\n".join(out) + "\n"


def _pem_line_end(pem: str) -> str:
    return pem if pem.endswith("\n") else pem + "\n"  # ssh refuses a key file without its final newline


def askpass_script(passphrase_file: str) -> str:
    return f"#!/bin/sh\nexec cat {shlex.quote(passphrase_file)}\n"


def secret_dir_base(env: Mapping[str, str] = os.environ, shm: str = "/dev/shm") -> str | None:
    """Where the key's private directory goes: $RUNNER_TEMP in GitHub Actions (the runner empties it after
    every job, even a cancelled one), else /dev/shm when writable (memory: never on a disk, gone at
    reboot), else the system default (None)."""
    runner_temp = env.get("RUNNER_TEMP")
    if runner_temp and os.path.isdir(runner_temp):
        return runner_temp
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


class Ssh:
    """ssh to the masters with a private 0700 directory (key, known_hosts, config: 0600) removed on close;
    close also ends the ssh processes still running (a signal: main turns SIGTERM/SIGHUP into SystemExit)."""

    def __init__(self, settings: Any, warn: Callable[[str], None]):
        self.settings = settings
        self._procs: set[subprocess.Popen] = set()
        # close() and run() under one lock: a probe thread that starts its ssh after close (a signal while
        # the probes start) would keep the interpreter alive until its timeout, with the key dir gone
        self._lock = threading.Lock()
        self._closed = False
        self._dir = tempfile.mkdtemp(prefix="metrics-aggregation-audit-", dir=secret_dir_base())  # 0700
        try:
            ssh = settings.ssh
            key = self._write("key", _pem_line_end(ssh.private_key)) if ssh.private_key else None
            b = ssh.bastion
            bkey = self._write("bastion-key", _pem_line_end(b.private_key)) if b and b.private_key else None
            self.env = dict(os.environ)
            if ssh.private_key_password:
                # ssh asks askpass for the key's passphrase; it reads a 0600 file beside the key (never argv/env)
                pw = self._write("passphrase", ssh.private_key_password)
                self.env.update(SSH_ASKPASS=self._write("askpass", askpass_script(pw), 0o700),
                                SSH_ASKPASS_REQUIRE="force")
            kh = self._write("known_hosts", known_hosts(settings))
            self.config = self._write("config", ssh_config(settings, key_file=key, bastion_key_file=bkey,
                                                           known_hosts_file=kh))
        except BaseException:
            self.close()
            raise
        unpinned = settings.unpinned_hosts()
        if unpinned:  # only with ssh.insecureSkipHostKeyCheck: true (config validation refuses it otherwise)
            warn(f"warning: {contract.NAMESPACE}:ssh.insecureSkipHostKeyCheck is true: no host key is checked "
                 f"for {', '.join(unpinned)}")
        if not shutil.which("ssh"):
            self.close()
            raise AuditError("ssh (the OpenSSH client) is not installed here")

    def _write(self, name: str, text: str, mode: int = 0o600) -> str:
        path = os.path.join(self._dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs = list(self._procs)
        for proc in procs:  # only when interrupted: a normal run has none left
            try:
                proc.kill()
            except OSError:
                pass
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Ssh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, master: str, command: str, stdin: str, timeout: float) -> subprocess.CompletedProcess:
        """`command` on `master` (its login shell runs it, as pulumi-command's do), stdin piped, bounded."""
        argv = ["ssh", "-F", self.config, "-T", _alias(master), command]
        with self._lock:
            if self._closed:
                return subprocess.CompletedProcess(argv, 255, "", "not started: the audit was interrupted")
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=self.env)
            self._procs.add(proc)
        with proc:
            try:
                out, err = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return subprocess.CompletedProcess(argv, 124, "", f"no answer within {timeout:.0f}s")
            finally:
                self._procs.discard(proc)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)


# --- the probe: one read-only shell program per master -------------------------------------------------

# Runs under `bash -s` (sudo -n with ssh.sudo). Writes nothing: no file, no lock, no temp file (the editor
# comes in a variable through a pipe, <(...)); every command bounded by `timeout`. Prints @-tagged lines.
# `set -uo pipefail` but not -e (the host scripts' rule is -euo): a probe must report every check, and one
# that fails (a stat, openssl on the key) is reported as an `error` line for that check, which the audit
# shows as ERROR; -e would end the probe at the first failure and leave the rest unchecked. pipefail makes
# `openssl pkey | sha256sum` fail when openssl does, instead of printing the sha256 of nothing.
# `@id` is who the probe runs as: the same login and sudo as the stack's steps, so the user install-certs
# runs as (it writes the files as itself).
_PROBE = r"""
{
set -uo pipefail
exec </dev/null
export LC_ALL=C
cfg=$1 layout=$2 container=$3 cert_dir=$4 readyz=$5 key=$6
shift 6
if [ ! -f "$cfg" ]; then
	echo "@flags-error $cfg does not exist"
elif out=$(timeout 20 awk -v mode=list -v layout="$layout" -v container="$container" -f <(printf '%s' "$EDITOR") "$cfg" 2>&1); then
	echo "@flags"
	printf '%s\n' "$out"
	echo "@end-flags"
else
	echo "@flags-error $(printf '%s' "$out" | head -c 400 | tr '\n\t' '  ')"
fi
for name in "$@"; do
	p=$cert_dir/$name
	if [ -L "$p" ]; then echo "@file $name symlink"
	elif [ -f "$p" ]; then
		sum=-
		if [ "$name" != "$key" ] && ! sum=$(timeout 10 sha256sum <"$p" | cut -d' ' -f1); then
			echo "@file $name error sha256sum cannot read it"
		elif ! st=$(timeout 10 stat -c '%a %u %g %U %G' -- "$p"); then
			echo "@file $name error stat cannot read its mode and owner"
		else echo "@file $name file $st $sum"; fi
	elif [ -e "$p" ]; then echo "@file $name not-regular"
	else echo "@file $name missing"; fi
done
p=$cert_dir/$key
if ! command -v openssl >/dev/null 2>&1; then echo "@pub none"
elif [ -f "$p" ]; then
	if pub=$(timeout 10 openssl pkey -in "$p" -pubout -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1); then
		echo "@pub $pub"
	else echo "@pub error openssl pkey cannot read the key"; fi
fi
if uid=$(id -u) && gid=$(id -g); then
	echo "@id $uid $gid $(id -un 2>/dev/null || echo "$uid") $(id -gn 2>/dev/null || echo "$gid")"
else echo "@id error"; fi
if command -v curl >/dev/null 2>&1; then
	code=$(timeout 10 curl --noproxy '*' -sk -o /dev/null -w '%{http_code}' --connect-timeout 2 --max-time 5 "$readyz" 2>/dev/null) || true
elif env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY timeout 10 wget -q --no-check-certificate -T 5 -t 1 -O /dev/null "$readyz" 2>/dev/null; then
	code=200
else code=000; fi
echo "@readyz ${code:-000}"
exit 0
}
"""


def probe_script(editor_text: str) -> str:
    return f"EDITOR={shlex.quote(editor_text)}\n{_PROBE}"


def probe_command(settings: Any, master: Any) -> str:
    from components import apiserver

    args = [apiserver.config_path(settings, master), settings.master_layout(master).value,
            settings.apiserver.container_name or DEFAULT_CONTAINER, apiserver.cert_dir(settings, master),
            settings.apiserver.readyz_url, contract.PROXY_KEY_FILE, *contract.PEM_FILES]
    line = "bash -s -- " + " ".join(shlex.quote(a) for a in args)
    return f"sudo -n {line}" if settings.ssh.sudo else line


@dataclass
class ProbeResult:
    flags: dict[str, str | None] | None = None
    flags_error: str = ""
    files: dict[str, FileFacts] = field(default_factory=dict)
    key_public_sha256: str | None = None
    key_public_error: str = ""
    writer: Writer | None = None  # None: no `@id` (the probe could not tell who it runs as)
    readyz: str = "000"


def parse_probe(text: str) -> ProbeResult:
    r = ProbeResult()
    listing: list[str] | None = None
    for line in text.splitlines():
        if listing is not None:
            if line == "@end-flags":
                r.flags, listing = parse_flag_listing("\n".join(listing)), None
            else:
                listing.append(line)
            continue
        tag, _, rest = line.partition(" ")
        if tag == "@flags":
            listing = []
        elif tag == "@flags-error":
            r.flags_error = rest
        elif tag == "@file":
            w = rest.split()
            if len(w) >= 2 and w[1] == "file" and len(w) == 8:
                r.files[w[0]] = FileFacts("file", w[2], w[3], w[4], w[5], w[6], "" if w[7] == "-" else w[7])
            elif len(w) == 2 and w[1] in ("missing", "symlink", "not-regular"):
                r.files[w[0]] = FileFacts({"not-regular": "not a regular file"}.get(w[1], w[1]))
            elif w:  # an `error` line, or one cut short: could not be checked, never "missing"
                msg = rest.partition(" ")[2].removeprefix("error").strip() if len(w) > 1 and w[1] == "error" else ""
                r.files[w[0]] = FileFacts("error", error=msg or f"unreadable probe line: {rest[:80]}")
        elif tag == "@pub":
            if rest.startswith("error"):
                r.key_public_error = rest.removeprefix("error").strip() or "openssl failed"
            else:
                r.key_public_sha256 = None if rest == "none" else rest
        elif tag == "@id":
            w = rest.split()
            r.writer = Writer(*w) if len(w) == 4 and w[0].isdigit() and w[1].isdigit() else None
        elif tag == "@readyz":
            r.readyz = rest.strip()
    return r


def ssh_hint(message: str, index: int, sudo: bool) -> str:
    """Which config key to look at for an SSH failure (ssh's own message says what happened)."""
    m = message.lower()
    if "host key verification failed" in m or "remote host identification has changed" in m:
        return f" (check masters[{index}].hostKey, or ssh.bastion.hostKey)"
    if "permission denied" in m:
        return f" (check ssh.user / masters[{index}].user and ssh.privateKey or ssh.agentSocketPath)"
    if sudo and "sudo" in m:
        return " (ssh.sudo is true: the user needs passwordless sudo, sudo -n)"
    if any(w in m for w in ("timed out", "refused", "no route", "could not resolve", "no answer")):
        return f" (check masters[{index}].address and port, ssh.port, ssh.bastion)"
    return ""


def audit_master(stack: Stack, ssh: Ssh, master: Any, timeout: float) -> list[Finding]:
    from components import apiserver

    s = stack.settings
    p = ssh.run(master.name, probe_command(s, master), probe_script(apiserver.editor_text()), timeout)
    if p.returncode != 0 or "@readyz" not in p.stdout:
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1][:200]
        index = next(i for i, m in enumerate(s.masters) if m.name == master.name)
        return [Finding(master.name, "ssh", "read-only probe", "answers", why + ssh_hint(why, index, s.ssh.sudo), ERROR)]
    r = parse_probe(p.stdout)
    out: list[Finding] = []
    if s.apiserver.manage:
        if r.flags is None:
            out.append(Finding(master.name, apiserver.config_path(s, master), "flags readable", "yes", r.flags_error, ERROR))
        else:
            out += compare_flags(master.name, apiserver.apiserver_flags(s, master), r.flags)
        out += compare_files(master.name, r.files, ca_pem=stack.outputs[contract.OUTPUT_AGGREGATOR_CA_CERT_PEM],
                             cert_pem=stack.outputs[contract.OUTPUT_PROXY_CLIENT_CERT_PEM],
                             key_public_sha256=r.key_public_sha256, key_owner=s.apiserver.key_owner,
                             writer=r.writer, key_public_error=r.key_public_error)
    out.append(compare_readyz(master.name, s.apiserver.readyz_url, r.readyz))
    return out


# --- the cluster ---------------------------------------------------------------------------------------


def audit_cluster(stack: Stack, get: Callable[[str], dict[str, Any] | None]) -> list[Finding]:
    from components import metrics_server

    s, o = stack.settings, stack.outputs
    if not s.metrics_server.manage:
        return []
    name = o.get(contract.OUTPUT_METRICS_API_SERVICE) or contract.METRICS_API_SERVICE
    ns = o.get(contract.OUTPUT_METRICS_SERVER_NAMESPACE) or s.metrics_server.namespace
    out: list[Finding] = []
    for what, path, compare in (
        (f"APIService {name}", f"/apis/apiregistration.k8s.io/v1/apiservices/{name}",
         lambda obj: compare_api_service(name, obj, o.get(contract.OUTPUT_METRICS_SERVER_SERVING_CA_CERT_PEM) or "")),
        (f"Deployment {ns}/{metrics_server.APP}", f"/apis/apps/v1/namespaces/{ns}/deployments/{metrics_server.APP}",
         lambda obj: compare_deployment(ns, metrics_server.APP, obj, metrics_server.image(s.metrics_server),
                                        metrics_server.container_args(s.metrics_server))),
    ):
        try:
            out += compare(get(path))
        except AuditError as e:  # no usable kubeconfig: the message names kubernetes:kubeconfig
            out.append(Finding(CLUSTER, what, "readable", "yes", str(e)[:200], ERROR))
        except Exception as e:  # unreachable, refused, TLS: the check could not run
            out.append(Finding(CLUSTER, what, "readable", "yes", f"{type(e).__name__}: {str(e)[:160]}", ERROR))
    return out


def kubeconfig_value(kubeconfig: str | None, project_dir: Path) -> str | None:
    """kubernetes:kubeconfig as the provider (running in the project dir) reads it: kube_access's rule, an
    existing file is a path and anything else the contents. A relative path is the project dir's; the
    contents (YAML, or one line of JSON) stay as they are."""
    if not kubeconfig or "\n" in kubeconfig:
        return kubeconfig
    path = Path(kubeconfig).expanduser()
    if not path.is_absolute() and (project_dir / path).is_file():
        return str(project_dir / path)
    return kubeconfig


def cluster_getter(stack: Stack, warn: Callable[[str], None] = lambda msg: None) -> Callable[[str], dict[str, Any] | None]:
    """A GET on the cluster. A kubeconfig that cannot be used does not stop the audit: the masters are
    still checked, and every cluster check becomes an ERROR naming kubernetes:kubeconfig (exit 2)."""
    from components import kube_access

    kubeconfig = kubeconfig_value(stack.kube.get("kubeconfig"), stack.project_dir)
    try:
        ep = kube_access.endpoint(kubeconfig, stack.kube.get("context"), stack.kube.get("cluster"))
    except kube_access.KubeAccessError as e:
        problem = AuditError(f"kubernetes:kubeconfig: {e} (the cluster is not checked)")
        warn(f"audit: {problem}")

        def unusable(path: str) -> dict[str, Any] | None:
            raise problem

        return unusable
    return lambda path: kube_access.get_json(ep, path)


# --- audit ---------------------------------------------------------------------------------------------


def audit(stack: Stack, ssh: Ssh, get: Callable[[str], dict[str, Any] | None], timeout: float) -> list[Finding]:
    masters = stack.settings.masters
    pool = ThreadPoolExecutor(max_workers=min(8, len(masters)) + 1)
    try:
        cluster = pool.submit(audit_cluster, stack, get)
        per_master = [pool.submit(audit_master, stack, ssh, m, timeout) for m in masters]
        found = [f for job in per_master for f in job.result()]
        return found + cluster.result()
    finally:
        # not waiting: interrupted (SystemExit on a signal), the caller's Ssh.close must run now, and it
        # ends the probes still running; otherwise every job is done already
        pool.shutdown(wait=False, cancel_futures=True)


# --- repair --------------------------------------------------------------------------------------------

_SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _plain(value: Any) -> Any:
    """A value of `pulumi stack export --show-secrets`: secrets are {sig: ..., "plaintext": <JSON>}."""
    if isinstance(value, Mapping) and _SECRET_SIG in value:
        return json.loads(value["plaintext"]) if "plaintext" in value else None
    return value


@dataclass(frozen=True)
class StoredStep:
    urn: str
    create: str
    stdin: str | None


def stored_steps(export: Mapping[str, Any], masters: Sequence[str]) -> dict[tuple[str, str], StoredStep]:
    """(master, "certs"|"flags") -> the create command (and stdin) the state holds for that step: the
    remote Commands named `<master>-certs` / `<master>-flags` under ApiserverAggregation."""
    wanted = {f"{m}-{kind}": (m, kind) for m in masters for kind in (CERTS_STEP, FLAGS_STEP)}
    out: dict[tuple[str, str], StoredStep] = {}
    for r in (export.get("deployment") or {}).get("resources") or []:
        urn = r.get("urn", "")
        if r.get("type") != "command:remote:Command" or contract.APISERVER_TYPE not in urn:
            continue
        key = wanted.get(urn.rsplit("::", 1)[-1])
        if key is None:
            continue
        inputs = r.get("inputs") or {}
        create = _plain(inputs.get("create"))
        stdin = _plain(inputs.get("stdin"))
        if isinstance(create, str):
            out[key] = StoredStep(urn, create, stdin if isinstance(stdin, str) else None)
    return out


def repair_plan(findings: Sequence[Finding], masters: Sequence[str]) -> list[tuple[str, str]]:
    """(master, step) to re-run, masters in rollout order: certs then flags for every master with a drifted
    flag or file (both are idempotent; the flags step runs the script the certs step installs), plus
    ("cluster", "up") when a Kubernetes object drifted."""
    drifted = {f.target for f in findings if f.status == DRIFT and f.repair in (FLAGS_STEP, CERTS_STEP)}
    plan = [(m, step) for m in masters if m in drifted for step in (CERTS_STEP, FLAGS_STEP)]
    if any(f.status == DRIFT and f.repair == CLUSTER_UP for f in findings):
        plan.append((CLUSTER, CLUSTER_UP))
    return plan


def cluster_targets(export: Mapping[str, Any], findings: Sequence[Finding]) -> list[str]:
    """The URNs of the drifted Kubernetes objects (the APIService, the Deployment) for `up --target`."""
    kinds = {f.object.split(" ", 1)[0] for f in findings if f.status == DRIFT and f.repair == CLUSTER_UP}
    types = {"APIService": "kubernetes:apiregistration.k8s.io/v1:APIService", "Deployment": "kubernetes:apps/v1:Deployment"}
    want = {types[k] for k in kinds if k in types}
    return [r["urn"] for r in (export.get("deployment") or {}).get("resources") or [] if r.get("type") in want]


AVAILABLE_WAIT = 120  # seconds: kube-aggregator re-checks an APIService's availability about every 30 s


def wait_available(get: Callable[[str], dict[str, Any] | None], name: str, log: Callable[[str], None],
                   timeout: float = AVAILABLE_WAIT, interval: float = 2.0) -> bool:
    """After a repair, until the APIService is Available again (bounded): an apiserver that ran without
    the proxy-client cert marks it unavailable (every apiserver's availability controller writes that
    status), and the others' next check, or the repaired one's, makes it True again. The audit after the
    repair should see the repaired state, not that stale condition."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _condition(get(f"/apis/apiregistration.k8s.io/v1/apiservices/{name}") or {}, "Available") == "True":
                return True
        except Exception:  # unreachable for a moment: keep trying until the deadline
            pass
        if time.monotonic() >= deadline:
            log(f"repair: APIService {name} is still not Available after {timeout:.0f}s")
            return False
        time.sleep(interval)


def repair(stack: Stack, pulumi: Pulumi, ssh: Ssh, findings: Sequence[Finding], log: Callable[[str], None]) -> None:
    s = stack.settings
    names = [m.name for m in s.masters]
    plan = repair_plan(findings, names)
    if not plan:
        log("repair: nothing that re-running a step repairs")
        return
    # the state, secrets included (the certs step's stdin holds the proxy-client key): in memory only
    export = pulumi.json("stack", "export", "--show-secrets")
    steps = stored_steps(export, names)
    # apply waits for readiness (readyTimeoutSeconds) and may roll back (as long again); install-certs may
    # wait up to 900 s for the host lock
    bound = {FLAGS_STEP: 2 * s.apiserver.ready_timeout_seconds + 180, CERTS_STEP: 960}
    for master, step in plan:
        if step == CLUSTER_UP:
            targets = cluster_targets(export, findings)
            log(f"repair: cluster: pulumi up --refresh --target {' --target '.join(targets)}")
            args = ["up", "--yes", "--skip-preview", "--refresh", "--diff"]
            for t in targets:
                args += ["--target", t]
            with _Signals.deferred():
                pulumi.run(*args, timeout=1800, capture=False)
            continue
        stored = steps.get((master, step))
        if stored is None:
            raise AuditError(f"the state of stack {pulumi.stack} has no {master}-{step} step: run `make up STACK={pulumi.stack}`")
        log(f"repair: {master}: re-running the stored create of {master}-{step}")
        t = time.monotonic()
        with _Signals.deferred():
            p = ssh.run(master, stored.create, stored.stdin or "", bound[step])
        for line in p.stdout.splitlines():
            log(f"    {line}")
        if p.returncode != 0:
            tail = " ".join(p.stderr.strip().splitlines()[-5:])
            raise AuditError(f"repair stopped: {master}-{step} exited {p.returncode}: {tail[:800]}")
        log(f"repair: {master}-{step} done in {time.monotonic() - t:.1f}s")


# --- main ----------------------------------------------------------------------------------------------


class _Signals:
    """What exit_on_signals' handler does: raise at once, or, while a repair step runs, remember the signal
    until the step ends (a step cut short is what the repair must never leave: an `up` killed mid-way keeps
    pending operations in the state, an apply killed mid-way is rolled back only by its own trap)."""

    deferring = False
    pending: int | None = None

    @classmethod
    def handle(cls, signum: int, frame: object = None) -> None:
        if cls.deferring:
            cls.pending = signum
            return
        raise SystemExit(128 + signum)

    @classmethod
    @contextlib.contextmanager
    def deferred(cls) -> Iterator[None]:
        """Run a bounded step to its end; a SIGTERM/SIGHUP that came meanwhile ends the audit after it."""
        cls.deferring = True
        try:
            yield
        finally:
            cls.deferring = False
        if cls.pending is not None:
            signum, cls.pending = cls.pending, None
            raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """SIGTERM (a CI cancel, a timeout) and SIGHUP (a closed terminal) as SystemExit(128+n), as Ctrl-C is
    KeyboardInterrupt: the `with Ssh` cleanup then runs and removes the private key and passphrase (the
    default action would end the process with them left on disk). During a repair step the exit waits for
    the step's end (_Signals.deferred)."""
    handler = _Signals.handle

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.audit",
        description="Read-only drift audit of a stack's masters (flags, certificate files, readiness) and "
        "cluster (APIService, metrics-server). Exit 0 clean, 1 drift, 2 usage/config/access error.")
    parser.add_argument("--stack", required=True, help="the stack to audit (its backend: PULUMI_BACKEND_URL)")
    parser.add_argument("--cwd", type=Path, default=REPO, help="the Pulumi project directory (default: the repo)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON (for CI)")
    parser.add_argument("--repair", action="store_true",
                        help="re-run the stored steps of every drifted master (then audit again); see docs/audit.md")
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT, help="seconds per master probe (default 60)")
    args = parser.parse_args(argv)
    exit_on_signals()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        if not (args.cwd / "Pulumi.yaml").is_file():
            raise AuditError(f"--cwd {args.cwd}: no Pulumi.yaml there (the project directory)")
        pulumi = Pulumi(args.stack, args.cwd)
        stack = load_stack(pulumi)
        get = cluster_getter(stack, log) if stack.settings.metrics_server.manage else (lambda path: None)
        with Ssh(stack.settings, log) as ssh:
            t = time.monotonic()
            findings = audit(stack, ssh, get, args.timeout)
            seconds = time.monotonic() - t
            if args.repair and exit_code(findings) == EXIT_DRIFT:
                sys.stderr.write(render_table([f for f in findings if f.status != OK]))
                repair(stack, pulumi, ssh, findings, log)
                if stack.settings.metrics_server.manage:
                    wait_available(get, stack.outputs.get(contract.OUTPUT_METRICS_API_SERVICE) or contract.METRICS_API_SERVICE,
                                   log)
                log("repair: auditing again")
                t = time.monotonic()
                findings = audit(stack, ssh, get, args.timeout)
                seconds = time.monotonic() - t
    except AuditError as e:
        log(f"audit: error: {e}")
        if args.json:  # CI reads stdout: say why there are no findings
            sys.stdout.write(json.dumps({"stack": args.stack, "exitCode": EXIT_ERROR, "clean": False,
                                         "error": str(e), "findings": []}, indent=2) + "\n")
        return EXIT_ERROR
    sys.stdout.write(to_json(args.stack, findings, seconds) if args.json else render_table(findings))
    if not args.json:
        log(f"audit of {args.stack}: {len(stack.settings.masters)} masters in {seconds:.2f}s")
    return exit_code(findings)


if __name__ == "__main__":
    sys.exit(main())
