"""The preflight warning for a stale SSH_AUTH_SOCK (components/ssh_agent.py): pulumi-command uses the agent
there whenever ssh.agentSocketPath is unset, even with a private key (pulumi-command
provider/pkg/provider/remote/connection.go SSHConfig), and a dead one fails every command (issue 16)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import ssh_agent
from tests.support.program import run


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket's path has at most 107 bytes (pytest's tmp_path may not)."""
    with tempfile.TemporaryDirectory(prefix="agent", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def live_socket(short_dir: Path) -> Iterator[str]:
    """A listening unix socket, as an agent's is (connect succeeds; nothing is ever said on it)."""
    path = str(short_dir / "agent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        s.listen(8)
        yield path


@pytest.fixture
def stale_socket(short_dir: Path) -> str:
    """The socket file of an agent that is gone (a tmux session that outlived its login): connect is refused."""
    path = str(short_dir / "gone.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
    return path


def test_a_live_agent_is_no_warning(live_socket):
    assert ssh_agent.unreachable(live_socket) is None
    assert ssh_agent.stale_agent_warning(None, {"SSH_AUTH_SOCK": live_socket}) is None


@pytest.mark.parametrize("kind", ["missing", "stale socket file", "a regular file", "a directory"])
def test_a_dead_socket_is_warned_of_naming_the_variable_the_effect_and_the_fix(kind, short_dir, stale_socket):
    path = {"missing": str(short_dir / "nothing-here"), "stale socket file": stale_socket,
            "a regular file": str(short_dir / "file"), "a directory": str(short_dir)}[kind]
    if kind == "a regular file":
        Path(path).write_text("not a socket")
    line = ssh_agent.stale_agent_warning(None, {"SSH_AUTH_SOCK": path, "AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    assert line is not None and "\n" not in line
    assert line.startswith(f"SSH_AUTH_SOCK is set to {path}, where no SSH agent answers (")
    assert "metrics-aggregation:ssh.agentSocketPath is unset" in line
    assert "every remote command of `up` and `destroy` fails" in line and "deletes included" in line
    assert "env -u SSH_AUTH_SOCK pulumi up" in line and "in CI, do not export it" in line
    assert "s3cr3t" not in line  # nothing of the environment but the socket's path


def test_an_abstract_socket_is_dialled_as_go_dials_it():
    """Go's net.Dial("unix", "@name") is Linux's abstract namespace; a live agent there is no warning."""
    name = f"metrics-aggregation-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind("\0" + name)
        s.listen(1)
        assert ssh_agent.stale_agent_warning(None, {ssh_agent.ENV: "@" + name}) is None
    assert ssh_agent.stale_agent_warning(None, {ssh_agent.ENV: "@" + name}) is not None


@pytest.mark.parametrize("environ", [{}, {"SSH_AUTH_SOCK": ""}], ids=["unset", "empty"])
def test_no_variable_no_warning(environ):
    """The provider reads an empty SSH_AUTH_SOCK as unset (connection_unix.go tryGetDefaultAgentSocket)."""
    assert ssh_agent.stale_agent_warning(None, environ) is None


def test_a_set_agent_socket_path_is_what_the_provider_uses(short_dir):
    """With ssh.agentSocketPath the variable is never read: no warning about it."""
    dead = {"SSH_AUTH_SOCK": str(short_dir / "nothing-here")}
    assert ssh_agent.stale_agent_warning("/run/agent.sock", dead) is None


def test_the_program_warns_before_anything_runs(stack_config, short_dir, monkeypatch, caplog):
    """config.load, with the other SSH warnings: in a preview too, where no command dials yet."""
    monkeypatch.setenv("SSH_AUTH_SOCK", str(short_dir / "nothing-here"))
    run(stack_config(), preview=True)
    assert "SSH_AUTH_SOCK is set to" in caplog.text and "no SSH agent answers" in caplog.text


def test_the_program_is_quiet_with_a_live_agent(stack_config, live_socket, monkeypatch, caplog):
    monkeypatch.setenv("SSH_AUTH_SOCK", live_socket)
    run(stack_config())
    assert "SSH_AUTH_SOCK" not in caplog.text
