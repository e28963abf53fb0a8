"""A stack without pinned SSH host keys is refused unless it says ssh.insecureSkipHostKeyCheck: true:
pulumi-command checks a host key only when one is given, and the certs step sends the proxy-client key
to whoever answers (issue 11)."""

from __future__ import annotations

import pytest

from components.config import ConfigError
from tests.support.program import run
from tests.unit.hostkeys import host_key


def problems(cfg) -> list[str]:
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert info.value.registrations == [] or all(r.type == "pulumi:pulumi:Stack" for r in info.value.registrations)
    return info.value.problems


def test_an_unpinned_master_is_refused_naming_it(stack_config):
    cfg = stack_config()
    cfg["masters"][1].pop("hostKey")
    [line] = problems(cfg)
    assert line.startswith("metrics-aggregation:masters[1].hostKey: (missing) is required"), line
    assert "ssh-keyscan -t ed25519 198.18.0.11" in line and "ssh.insecureSkipHostKeyCheck: true" in line


def test_every_unpinned_host_is_named_at_once(stack_config):
    cfg = stack_config(ssh={"bastion": {"host": "198.18.0.99"}})
    for m in cfg["masters"]:
        m.pop("hostKey")
    keys = [p.split(": ", 1)[0] for p in problems(cfg)]
    assert keys == [f"metrics-aggregation:masters[{i}].hostKey" for i in range(3)] + ["metrics-aggregation:ssh.bastion.hostKey"]


def test_an_unpinned_bastion_is_refused(stack_config):
    [line] = problems(stack_config(ssh={"bastion": {"host": "198.18.0.99"}}))
    assert line.startswith("metrics-aggregation:ssh.bastion.hostKey: (missing) is required"), line
    assert "ssh-keyscan -t ed25519 198.18.0.99" in line


def test_a_bastion_host_key_is_checked_like_a_masters(stack_config):
    [line] = problems(stack_config(ssh={"bastion": {"host": "198.18.0.99", "hostKey": "AAAA"}}))
    assert line.startswith("metrics-aggregation:ssh.bastion.hostKey: 'AAAA' is not an SSH public host key"), line


def test_pinned_keys_reach_every_connection(stack_config):
    result = run(stack_config(ssh={"bastion": {"host": "198.18.0.99", "hostKey": host_key(9)}}))
    for c in result.commands:
        i = int(c["name"].split("-")[0].removeprefix("master")) - 1
        assert c["connection"]["hostKey"] == host_key(i)
        assert c["connection"]["proxy"]["hostKey"] == host_key(9)


def test_insecure_skip_accepts_unpinned_hosts_and_says_so(stack_config, caplog):
    cfg = stack_config(ssh={"insecureSkipHostKeyCheck": True, "bastion": {"host": "198.18.0.99"}})
    cfg["masters"][0].pop("hostKey")
    result = run(cfg)
    assert "hostKey" not in result.commands[0]["connection"]
    assert result.commands[2]["connection"]["hostKey"] == host_key(1)  # a pinned key is still checked
    assert "ssh.insecureSkipHostKeyCheck is true: no SSH host key is checked for master1, bastion 198.18.0.99;" \
        in caplog.text, caplog.text


def test_insecure_skip_must_be_a_boolean(stack_config):
    cfg = stack_config(ssh={"insecureSkipHostKeyCheck": "sure"})
    cfg["masters"][0].pop("hostKey")
    lines = problems(cfg)
    assert any(p.startswith("metrics-aggregation:ssh.insecureSkipHostKeyCheck: 'sure' must be true or false") for p in lines), lines
