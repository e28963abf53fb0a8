"""Before anything is registered: would pulumi-command use an SSH agent that is not there?

pulumi-command dials the agent in `SSH_AUTH_SOCK` whenever `connection.agentSocketPath` is unset, even
when a private key is given (pulumi-command provider/pkg/provider/remote/connection.go SSHConfig,
connection_unix.go tryGetDefaultAgentSocket), and a socket nothing answers on fails the connection set-up:
every remote command fails, deletes included. A stale variable is common: a tmux or screen session that
outlived its login, `sudo` keeping the caller's variable, a CI runner exporting a socket of an earlier job.
The provider runs with the environment `pulumi` started with, which is the program's too, so the program
can see the same variable and warn before `up` runs into it (the README, "SSH: a stale SSH_AUTH_SOCK").
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from components.contract import NAMESPACE

ENV = "SSH_AUTH_SOCK"
# connect(2) to a unix socket answers at once; the bound only guards against a listener that hangs
CONNECT_TIMEOUT = 2.0


def unreachable(path: str) -> str | None:
    """Why nothing answers on the unix socket `path` (as `net.Dial("unix", path)` would find), None when
    something does. Only connects, never speaks to the agent."""
    # Go's net.Dial("unix", "@name") means Linux's abstract namespace, where Python wants a leading NUL
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(CONNECT_TIMEOUT)
            s.connect(address)
    except OSError as e:  # missing file, refused (a stale socket file), not a socket, denied, path too long
        return e.strerror or type(e).__name__
    return None


def stale_agent_warning(agent_socket_path: str | None, environ: Mapping[str, str]) -> str | None:
    """The warning for a `SSH_AUTH_SOCK` that pulumi-command would use (ssh.agentSocketPath unset) and that
    nothing answers on; None when there is nothing to warn about. It names the socket's path, which is no
    secret; nothing else of the environment."""
    path = environ.get(ENV, "")
    if agent_socket_path or not path:  # the provider ignores an empty variable, as it does a set path
        return None
    why = unreachable(path)
    if why is None:
        return None
    return (
        f"{ENV} is set to {path}, where no SSH agent answers ({why}), and {NAMESPACE}:ssh.agentSocketPath is "
        f"unset: pulumi-command then uses that agent for every SSH connection, even with ssh.privateKey, so every "
        f"remote command of `up` and `destroy` fails before it runs, deletes included; unset it for pulumi "
        f"(`env -u {ENV} pulumi up`; in CI, do not export it), or start the agent again, or set "
        f"ssh.agentSocketPath to a live agent's socket"
    )
