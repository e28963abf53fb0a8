"""Contract tests of the command provider under the real engine: what the program relies on in
pulumi-command v1.2.1 (provider/pkg/provider/remote, on pulumi-go-provider v1.3.0), pinned on the
project's stand-in (toolchain/adapters/cmd/pulumi-resource-command) so that it cannot drift from upstream.

One small program (PROGRAM: one remote.Command from the stack config) against one SSH test host of the
lab, plus a second sshd on that host that has only an RSA host key. `pulumi up --event-log` is run
directly, so the tests read the engine's own events (status messages, diagnostics, outputs).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import sshd
from lab.hosts import Host, Lab, LabError
from lab.proc import kill_pid, kill_tree, run_tree, tcp_open, wait_for
from tests.e2e.engine import PROJECT, E2EStack, Project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# The connection is a plain dict, not remote.ConnectionArgs: the SDK's input class fills in the schema
# defaults itself, a dict leaves them to the provider's Check.
PROGRAM = '''
import json

import pulumi
from pulumi_command import remote

cfg = pulumi.Config()
connection = json.loads(cfg.require("connection"))
key = cfg.get_secret("privateKey")
if key is not None:
    connection["privateKey"] = key
cmd = remote.Command("cmd", connection=connection, create=cfg.get("create"), delete=cfg.get("delete"),
                     logging=cfg.get("logging"), add_previous_output_in_env=False)
pulumi.export("stdout", cmd.stdout)
'''
RSA_PORT = 2222
CLOSED_PORT = 2  # nothing listens there on a test host


@dataclass
class CommandHost:
    lab: Lab
    host: Host
    rsa_key_pub: str  # the host key of the second sshd (RSA only), as `ssh-rsa AAAA...`

    @property
    def key(self) -> str:
        return self.lab.client_key.read_text()

    def marker(self, name: str) -> Path:
        """A file the commands touch, as the runner sees it (the host's own /var/lib)."""
        return self.host.path(f"/var/lib/{name}")


def _start_rsa_sshd(host: Host) -> tuple[subprocess.Popen, str]:
    """A second sshd on `host` (port RSA_PORT) with only an RSA host key: what a server pinned by its
    `ssh-rsa` key looks like. OpenSSH >= 8.8 signs with rsa-sha2-* only."""
    d = host.dir / "rsa-sshd"
    d.mkdir()
    sshd.write_config(d, f"{host.name}-rsa", listen="0.0.0.0", forwarding=False,
                      authorized_keys="/run/metrics-aggregation-ssh/authorized_keys")
    key = d / "ssh_host_rsa_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(key)], check=True, timeout=60)
    config = (d / "sshd_config").read_text()
    config = config.replace("Port 22\n", f"Port {RSA_PORT}\n").replace(f"HostKey {d / 'ssh_host_ed25519_key'}\n",
                                                                         f"HostKey {key}\n")
    assert f"HostKey {key}\n" in config and f"Port {RSA_PORT}\n" in config, config
    (d / "sshd_config").write_text(config)
    assert host.supervisor is not None
    p = sshd.start(d, host.supervisor.pid, d / "sshd.log")
    wait_for(lambda: tcp_open(host.address, RSA_PORT), f"the RSA sshd on {host.name}", 10)
    return p, " ".join(Path(f"{key}.pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandHost]:
    root = tmp_path_factory.mktemp("cmd-lab")
    try:
        lab = Lab.create(root)
    except LabError as e:
        pytest.fail(f"cannot build the SSH test hosts: {e}", pytrace=False)
    rsa = None
    try:
        host = lab.add_host("c1", layout=None)
        rsa, rsa_pub = _start_rsa_sshd(host)
        yield CommandHost(lab, host, rsa_pub)
    finally:
        if rsa is not None:  # the listener and the connections it serves
            kill_tree(rsa.pid)
            rsa.wait(5)
        lab.close()


@dataclass
class Run:
    returncode: int | None  # None: still running when the test stopped it
    output: str
    events: list[dict[str, Any]]

    def statuses(self) -> list[str]:
        """The ephemeral (status) messages the provider sent about the command, in order."""
        return [d["message"].rstrip("\n") for d in self.diagnostics() if d.get("ephemeral")]

    def diagnostics(self) -> list[dict[str, Any]]:
        return [e["diagnosticEvent"] for e in self.events if "diagnosticEvent" in e
                and e["diagnosticEvent"].get("urn", "").endswith("::cmd")]

    def errors(self) -> str:
        return "\n".join(d["message"] for d in self.diagnostics() if d.get("severity") == "error")

    def created(self) -> bool:
        return any(e.get("resOutputsEvent", {}).get("metadata", {}).get("urn", "").endswith("::cmd")
                   for e in self.events)


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line still being written
            pass
    return out


class CommandStack:
    """A stack of PROGRAM, run with the toolchain's pulumi CLI."""

    def __init__(self, toolchain, tmp: Path, target: CommandHost, connection: dict[str, Any], **config: Any):
        proj = Project.copy(tmp / "project", program=PROGRAM)
        self.tmp = tmp
        self.stack: E2EStack = proj.stack(toolchain, tmp / "backend", "cmd", self._values(connection, config),
                                          secret_paths={f"{PROJECT}:privateKey": target.key})
        self.runs = 0

    @staticmethod
    def _values(connection: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        values = {f"{PROJECT}:connection": json.dumps(connection)}
        values.update({f"{PROJECT}:{k}": v for k, v in config.items() if v is not None})
        return values

    def configure(self, connection: dict[str, Any], **config: Any) -> None:
        """Replace the program's config (the private key stays)."""
        doc = yaml.safe_load(self.stack.config_file.read_text())
        cfg = doc["config"]
        for k in [k for k in cfg if k.startswith(f"{PROJECT}:") and k != f"{PROJECT}:privateKey"]:
            cfg.pop(k)
        cfg.update(self._values(connection, config))
        self.stack.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def _argv(self, op: str, log: Path) -> list[str]:
        return [str(self.stack.pulumi_bin), op, "--yes", "--skip-preview", "--non-interactive", "--color", "never",
                "--stack", self.stack.name, "--event-log", str(log)]

    def _env(self, ssh_auth_sock: str | None) -> dict[str, str]:
        env = dict(self.stack.env)  # without SSH_AUTH_SOCK (engine.py)
        env["PULUMI_DEBUG_COMMANDS"] = "true"  # --event-log is a debug flag (pulumi.automation sets it too)
        if ssh_auth_sock is not None:
            env["SSH_AUTH_SOCK"] = ssh_auth_sock
        return env

    def run(self, op: str = "up", *, ssh_auth_sock: str | None = None, timeout: float = 180) -> Run:
        self.runs += 1
        log = self.tmp / f"events-{self.runs}.jsonl"
        p = run_tree(self._argv(op, log), cwd=self.stack.project.dir, env=self._env(ssh_auth_sock), timeout=timeout)
        self.stack.outputs += [f"==== {op}", p.stdout, p.stderr]
        return Run(p.returncode, p.stdout + p.stderr, _events(log))

    def start(self, op: str = "up") -> tuple[subprocess.Popen, Path]:
        self.runs += 1
        log = self.tmp / f"events-{self.runs}.jsonl"
        out = open(self.tmp / f"output-{self.runs}.txt", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(self._argv(op, log), cwd=self.stack.project.dir, env=self._env(None),
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        return p, log

    def state(self) -> list[dict[str, Any]]:
        return json.loads(self.stack.cli("stack", "export", "--show-secrets"))["deployment"].get("resources", [])


def _command(state: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in state if r["urn"].endswith("::cmd")), None)


def _plain(value: Any) -> Any:
    """A value of `stack export --show-secrets`: a secret is {"plaintext": <its JSON>}."""
    if isinstance(value, dict) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


def _kill_tree(p: subprocess.Popen) -> None:
    """Stop a `pulumi up` this test started and the plugins it started, by their ids."""
    kill_tree(p.pid)
    p.wait(10)


def _start_until(s: CommandStack, marker: Path, what: str) -> tuple[subprocess.Popen, Path]:
    """`pulumi up` started in the background, returned once the command touched `marker` with the up
    still running."""
    p, log = s.start()
    try:
        wait_for(lambda: marker.exists() or p.poll() is not None, what, 120, 0.2)
        assert p.poll() is None, f"pulumi up ended ({p.returncode}) before {what}"
    except BaseException:
        _kill_tree(p)
        raise
    return p, log


def _direct(target: CommandHost, **extra: Any) -> dict[str, Any]:
    return {"host": target.host.address, "hostKey": target.host.host_key_pub, **extra}


# ----------------------------------------------------------------------------------------- host keys
def test_an_rsa_host_key_pin_fails_with_no_common_algorithm(toolchain, tmp_path, target):
    """pulumi-command provider/pkg/provider/remote/connection.go (SSHConfig): with hostKey set,
    HostKeyAlgorithms is exactly the pinned key's type, `ssh-rsa` for an RSA key, which OpenSSH >= 8.8
    does not offer; without hostKey the host key is not checked at all."""
    pinned = _direct(target, port=RSA_PORT, hostKey=target.rsa_key_pub, dialErrorLimit=1)
    s = CommandStack(toolchain, tmp_path, target, pinned, create="echo reached")
    r = s.run()
    assert r.returncode != 0, r.output[-3000:]
    assert "ssh: handshake failed: ssh: no common algorithm for host key" in r.errors(), r.output[-3000:]
    assert "after 1 failed attempts: " in r.errors(), r.errors()  # a host-key failure is retried too
    assert r.statuses() == ["Dial 1/1 failed: retrying"], r.statuses()
    assert _command(s.state()) is None

    # the same server without a pin: nothing is checked, the command runs
    s.configure({k: v for k, v in pinned.items() if k != "hostKey"}, create="echo reached")
    r = s.run()
    assert r.returncode == 0, r.output[-3000:]
    assert _command(s.state())["outputs"]["stdout"] == "reached"


# ------------------------------------------------------------------------------------------- the agent
def _dead_agent(tmp: Path) -> str:
    """A socket path whose agent is gone (a closed tmux or CI session): the file is there, nobody listens."""
    path = tmp / "agent.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    return str(path)


def test_a_dead_ssh_auth_sock_fails_create_and_delete_next_to_a_private_key(toolchain, tmp_path, target):
    """pulumi-command provider/pkg/provider/remote/connection.go (SSHConfig) and connection_unix.go:
    without agentSocketPath, SSH_AUTH_SOCK is used whenever it is set, also when a privateKey is given,
    and a dead socket fails the connection set-up of every command, deletes included."""
    dead = _dead_agent(tmp_path)
    want = f"dial unix {dead}: connect: connection refused"
    s = CommandStack(toolchain, tmp_path, target, _direct(target), create="echo created", delete="echo deleted")
    r = s.run(ssh_auth_sock=dead)
    assert r.returncode != 0 and want in r.errors(), r.output[-3000:]
    assert r.statuses() == [], r.statuses()  # a set-up failure, before any dial: nothing retried
    assert _command(s.state()) is None

    r = s.run()  # the same stack without the dead agent
    assert r.returncode == 0, r.output[-3000:]

    r = s.run("destroy", ssh_auth_sock=dead)
    assert r.returncode != 0 and want in r.errors(), r.output[-3000:]
    assert _command(s.state()) is not None, "the command left the state although its delete never ran"

    # an agentSocketPath of its own wins over SSH_AUTH_SOCK: the key alone is enough again
    own = tmp_path / "own-agent"
    agent = subprocess.run(["ssh-agent", "-a", str(own)], capture_output=True, text=True, timeout=30, check=True)
    agent_pid = int(agent.stdout.split("SSH_AGENT_PID=", 1)[1].split(";", 1)[0])
    try:
        # the update stores the new connection, which the delete then uses
        s.configure(_direct(target, agentSocketPath=str(own)), create="echo created", delete="echo deleted")
        r = s.run(ssh_auth_sock=dead)
        assert r.returncode == 0, r.output[-3000:]
        r = s.run("destroy", ssh_auth_sock=dead)
        assert r.returncode == 0, r.output[-3000:]
        assert _command(s.state()) is None
    finally:
        kill_pid(agent_pid)


# ------------------------------------------------------------------------------------ output streaming
def test_output_lines_are_status_messages_as_logging_selects(toolchain, tmp_path, target):
    """pulumi-command provider/pkg/provider/remote/commandOutputs.go (run), util.go (LogOutput) and
    logging.go; pulumi-go-provider logging.go (InfoStatus -> the engine's Log, ephemeral): every stdout and
    stderr line is an ephemeral status message of the resource, by default both streams, none with
    `logging: none`; the outputs are captured either way."""
    create = "echo out-one; echo err-one >&2; echo out-two"
    s = CommandStack(toolchain, tmp_path, target, _direct(target), create=create)
    r = s.run()
    assert r.returncode == 0, r.output[-3000:]
    assert sorted(r.statuses()) == ["err-one", "out-one", "out-two"], r.diagnostics()
    status = next(d for d in r.diagnostics() if d.get("ephemeral"))
    assert status["severity"] == "info" and status["urn"].endswith("command:remote:Command::cmd"), status
    assert r.statuses().index("out-one") < r.statuses().index("out-two")
    assert [d for d in r.diagnostics() if not d.get("ephemeral")] == [], "a streamed line became a lasting diagnostic"

    expected = {"none": [], "stdout": ["out-one", "out-two"], "stderr": ["err-one"],
                "stdoutAndStderr": ["err-one", "out-one", "out-two"]}
    for i, (logging, lines) in enumerate(expected.items()):
        # a changed `logging` is an update, which runs `create` again
        s.configure(_direct(target), create=f"{create}; echo run-{i} >/dev/null", logging=logging)
        r = s.run()
        assert r.returncode == 0, r.output[-3000:]
        assert sorted(r.statuses()) == lines, f"logging {logging}: {r.statuses()}"
        assert _command(s.state())["outputs"]["stdout"] == "out-one\nout-two", logging


def test_a_line_over_64_kib_hangs_the_command_as_upstream(toolchain, tmp_path, target):
    """pulumi-command provider/pkg/provider/util/util.go (LogOutput, a default bufio.Scanner) and
    remote/commandOutputs.go (run): a streamed line over 64 KiB stops the scanner, the pipe is no longer
    drained and session.Run never returns (pulumi-command issue #201). Bounded here: the remote command
    finishes, the step does not; with `logging: none` the same command completes."""
    done = target.marker("long-line-done")
    long_line = "printf 'before\\n'; head -c 70000 /dev/zero | tr '\\0' x; printf '\\nafter\\n'"
    create = f"{long_line}; touch {'/var/lib/' + done.name}"
    s = CommandStack(toolchain, tmp_path, target, _direct(target), create=create)
    p, log = _start_until(s, done, "the remote command to finish")
    try:
        # the remote side is done; a step that was going to end has had ample time after 20 s more
        time.sleep(20)
        assert p.poll() is None, f"pulumi up ended ({p.returncode}): the long line did not stop the stream"
        r = Run(None, "", _events(log))
        assert "before" in r.statuses() and "after" not in r.statuses(), r.statuses()
        assert not r.created() and not r.errors(), r.diagnostics()
    finally:
        _kill_tree(p)
    done.unlink()

    fresh = tmp_path / "none"
    fresh.mkdir()
    s = CommandStack(toolchain, fresh, target, _direct(target), create=create, logging="none")
    r = s.run(timeout=120)
    assert r.returncode == 0, r.output[-3000:]
    assert done.exists()
    assert r.statuses() == []
    assert len(_command(s.state())["outputs"]["stdout"]) == len("before\n") + 70000 + len("\nafter")


# ----------------------------------------------------------------------------------- dials and retries
def test_dial_failures_are_retried_up_to_the_limit_and_reported(toolchain, tmp_path, target):
    """pulumi-command provider/pkg/provider/remote/connection.go (dialWithRetry, Dial): dialErrorLimit+1
    attempts, each failed one reported as "Dial n/limit failed: retrying", then "after N failed attempts";
    an authentication failure is retried too; through a proxy every error starts with "proxy: "."""
    closed = _direct(target, port=CLOSED_PORT, dialErrorLimit=2)
    s = CommandStack(toolchain, tmp_path, target, closed, create="true")
    r = s.run()
    assert r.returncode != 0, r.output[-3000:]
    want = f"after 2 failed attempts: dial tcp {target.host.address}:{CLOSED_PORT}: connect: connection refused"
    assert want in r.errors(), r.errors()
    assert r.statuses() == ["Dial 1/2 failed: retrying", "Dial 2/2 failed: retrying"], r.statuses()

    # authentication: a key the host does not know, and no agent
    other = tmp_path / "other_id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    s.stack.stack.set_config(f"{PROJECT}:privateKey", _secret(other.read_text()))
    s.configure(_direct(target, dialErrorLimit=1), create="true")
    r = s.run()
    assert r.returncode != 0, r.output[-3000:]
    assert "after 1 failed attempts: ssh: handshake failed: ssh: unable to authenticate" in r.errors(), r.errors()
    assert r.statuses() == ["Dial 1/1 failed: retrying"], r.statuses()

    # a proxy that does not answer: its own limit, and "proxy: "
    s.stack.stack.set_config(f"{PROJECT}:privateKey", _secret(target.key))
    proxy = {"host": target.host.address, "port": CLOSED_PORT, "dialErrorLimit": 0}
    s.configure(_direct(target, proxy=proxy), create="true")
    r = s.run()
    assert r.returncode != 0, r.output[-3000:]
    want = f"proxy: after 0 failed attempts: dial tcp {target.host.address}:{CLOSED_PORT}: connect: connection refused"
    assert want in r.errors(), r.errors()
    assert r.statuses() == [], r.statuses()


def _secret(value: str):
    from pulumi import automation as auto

    return auto.ConfigValue(value=value, secret=True)


# ------------------------------------------------------------------- Check defaults, error text, cancel
def test_check_sets_the_connection_defaults(toolchain, tmp_path, target):
    """pulumi-command provider/pkg/provider/remote/connection.go and proxyConnection.go (Annotate:
    SetDefault) applied by pulumi-go-provider infer/resource.go (Check -> DefaultCheck): a connection of
    only a host is stored with port 22, user root, dialErrorLimit 10 and perDialTimeout 15."""
    s = CommandStack(toolchain, tmp_path, target, {"host": target.host.address}, create="id -un")
    r = s.run()
    assert r.returncode == 0, r.output[-3000:]
    cmd = _command(s.state())
    assert _plain(cmd["outputs"]["stdout"]) == "root"
    conn = _plain(cmd["inputs"]["connection"])
    assert {k: conn.get(k) for k in ("host", "port", "user", "dialErrorLimit", "perDialTimeout")} == {
        "host": target.host.address, "port": 22, "user": "root", "dialErrorLimit": 10, "perDialTimeout": 15}, conn


def test_a_failing_command_quotes_the_command_and_interleaves_its_output(toolchain, tmp_path, target):
    """pulumi-command provider/pkg/provider/remote/commandOutputs.go (run): the error is
    "%w: running %q:\\n<stdout and stderr as they came>", and the resource is not stored."""
    create = "echo out-1; sleep 0.3; echo err-1 >&2; sleep 0.3; echo out-2; exit 3"
    s = CommandStack(toolchain, tmp_path, target, _direct(target), create=create)
    r = s.run()
    assert r.returncode != 0, r.output[-3000:]
    quoted = json.dumps(create)
    assert f"Process exited with status 3: running {quoted}:\nout-1\nerr-1\nout-2\n" in r.errors(), r.errors()
    assert _command(s.state()) is None


def test_a_cancelled_up_lets_the_running_command_finish(toolchain, tmp_path, target):
    """pulumi-command provider/pkg/provider/remote/commandOutputs.go (session.Run takes no context) under
    pulumi-go-provider middleware/cancel/cancel.go (Cancel cancels the operations' contexts): an interrupted
    `pulumi up` cancels, and the command that runs goes on to its end."""
    started, finished = target.marker("cancel-started"), target.marker("cancel-finished")
    create = f"touch /var/lib/{started.name}; sleep 6; touch /var/lib/{finished.name}; echo finished"
    s = CommandStack(toolchain, tmp_path, target, _direct(target), create=create)
    p, _ = _start_until(s, started, "the command to start")
    try:
        assert not finished.exists()
        p.send_signal(signal.SIGINT)  # what ^C does: the engine cancels and signals the providers
        p.wait(120)
    finally:
        if p.poll() is None:
            _kill_tree(p)
    output = (tmp_path / f"output-{s.runs}.txt").read_text()
    assert finished.exists(), f"the command was stopped:\n{output[-3000:]}"
    assert finished.stat().st_mtime - started.stat().st_mtime >= 5.5
    cmd = _command(s.state())
    assert cmd is not None and cmd["outputs"]["stdout"] == "finished", output[-3000:]
    for f in (started, finished):
        f.unlink()

