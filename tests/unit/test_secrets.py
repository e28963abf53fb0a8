"""No secret on a command line, in an environment or in an output."""

from __future__ import annotations

import base64
import re

from components.apiserver import host_files_text
from tests.support.program import run


def key_material(pem: str) -> list[str]:
    """Fragments that identify a PEM key: every base64 line of its body."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def test_no_private_key_in_any_command_line_or_environment(stack_config, ssh_private_key):
    result = run(stack_config(ssh={"sudo": True}))
    keys = [r.state["privateKeyPem"] for r in result.of_type("tls:index/privateKey:PrivateKey")]
    secrets = [ssh_private_key] + keys
    for r in result.of_type("command:remote:Command"):
        assert "environment" not in r.inputs, f"{r.name} configures the script through SSH setenv"
        for field in ("create", "update", "delete"):
            line = r.inputs[field]
            for secret in secrets:
                for fragment in key_material(secret):
                    assert fragment not in line, f"{r.name}.{field} carries key material"
            # nor base64 of a whole key
            for secret in secrets:
                assert base64.b64encode(secret.encode()).decode()[:40] not in line


def test_secret_inputs_are_marked_secret(stack_config):
    result = run(stack_config())
    for r in result.of_type("command:remote:Command"):
        assert "connection" in r.secret_inputs, r.name  # holds the SSH key
        if r.name.endswith("-certs"):
            assert "stdin" in r.secret_inputs, r.name  # holds the proxy-client key
            assert r.inputs["stdin"].startswith(host_files_text())  # the host script and its editor, then the PEMs


def test_no_private_key_in_outputs(stack_config):
    result = run(stack_config())
    text = repr(result.outputs)
    assert "PRIVATE KEY" not in text
    keys = [r.state["privateKeyPem"] for r in result.of_type("tls:index/privateKey:PrivateKey")]
    for key in keys:
        for fragment in key_material(key):
            assert fragment not in text


def test_sudo_is_non_interactive(stack_config):
    result = run(stack_config(ssh={"sudo": True}))
    for c in result.commands:
        for field in ("create", "update", "delete"):
            assert re.match(r"^sudo -n (bash|sh -c) ", c[field]), c[field][:40]
    plain = run(stack_config())
    assert all(re.match(r"^(bash|sh -c) ", c["create"]) for c in plain.commands)
