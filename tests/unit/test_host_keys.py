"""A stack without pinned SSH host keys is refused unless it says ssh.insecureSkipHostKeyCheck: true:
pulumi-command checks a host key only when one is given, and the certs step sends the proxy-client key
to whoever answers (issue 11). A pinned RSA key is refused: no step could connect (issue 16)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

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


# --- the key type: pulumi-command offers exactly the pinned key's type (issue 16) ---------------------------

def _openssh(key) -> str:
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


RSA_KEY = _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048))
RSA_BLOB = RSA_KEY.split()[1]
ECDSA_KEYS = {curve: _openssh(ec.generate_private_key(curve())) for curve in (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)}


@pytest.mark.parametrize("pinned", [RSA_KEY, f"{RSA_KEY} root@master2", f"rsa-sha2-256 {RSA_BLOB}",
                                    f"rsa-sha2-512 {RSA_BLOB}", f"ssh-ed25519 {RSA_BLOB}"],
                         ids=["ssh-rsa", "with a comment", "typed rsa-sha2-256", "typed rsa-sha2-512",
                              "an RSA blob typed ssh-ed25519"])
def test_an_rsa_host_key_is_refused_naming_the_master_and_the_fix(stack_config, pinned):
    """x/crypto takes the type from the blob (golang.org/x/crypto ssh/keys.go ParseAuthorizedKey), so an RSA key
    is `ssh-rsa` whatever its first word says, and pulumi-command offers only that (pulumi-command
    provider/pkg/provider/remote/connection.go): OpenSSH >= 8.8 refuses it, and every step would fail."""
    cfg = stack_config()
    cfg["masters"][1]["hostKey"] = pinned
    [line] = problems(cfg)
    assert line.startswith("metrics-aggregation:masters[1].hostKey: "), line
    assert "is an RSA key (master master2)" in line and "no common algorithm for host key" in line
    assert "ssh-keyscan -t ed25519 198.18.0.11" in line and "ssh-keyscan -t ecdsa" in line


def test_the_keyscan_asks_the_port_ssh_uses(stack_config):
    """ssh-keyscan asks port 22 unless told: the fix names the port the program connects to."""
    cfg = stack_config(ssh={"port": 2222, "bastion": {"host": "198.18.0.99", "port": 2200}})
    cfg["masters"][0].pop("hostKey")
    cfg["masters"][1]["hostKey"] = RSA_KEY
    cfg["masters"][1]["port"] = 2022
    cfg["masters"][2].pop("hostKey")
    cfg["masters"][2]["port"] = 22
    # an RSA pin is refused with the master's own settings, before the unpinned ones are looked at
    [rsa_line] = problems(cfg)
    assert rsa_line.startswith("metrics-aggregation:masters[1].hostKey: "), rsa_line
    assert "ssh-keyscan -t ed25519 -p 2022 198.18.0.11`" in rsa_line
    cfg["masters"][1].pop("hostKey")
    by_key = {p.split(": ", 1)[0].split(":", 1)[1]: p for p in problems(cfg)}
    assert "ssh-keyscan -t ed25519 -p 2222 198.18.0.10`" in by_key["masters[0].hostKey"]
    assert "ssh-keyscan -t ed25519 -p 2022 198.18.0.11`" in by_key["masters[1].hostKey"]
    assert "ssh-keyscan -t ed25519 198.18.0.12`" in by_key["masters[2].hostKey"]
    assert "ssh-keyscan -t ed25519 -p 2200 198.18.0.99`" in by_key["ssh.bastion.hostKey"]


def test_every_rsa_pin_is_named_at_once_the_bastion_s_too(stack_config):
    cfg = stack_config(ssh={"bastion": {"host": "198.18.0.99", "hostKey": RSA_KEY}})
    cfg["masters"][0]["hostKey"] = cfg["masters"][2]["hostKey"] = RSA_KEY
    lines = problems(cfg)
    assert [p.split(": ", 1)[0] for p in lines] == [
        "metrics-aggregation:masters[0].hostKey", "metrics-aggregation:masters[2].hostKey",
        "metrics-aggregation:ssh.bastion.hostKey"]
    assert "(the bastion 198.18.0.99)" in lines[2] and "ssh-keyscan -t ed25519 198.18.0.99" in lines[2]


@pytest.mark.parametrize("curve", ECDSA_KEYS, ids=lambda c: c.name)
def test_ecdsa_host_keys_are_pinned(stack_config, curve):
    cfg = stack_config(ssh={"bastion": {"host": "198.18.0.99", "hostKey": ECDSA_KEYS[curve]}})
    cfg["masters"][0]["hostKey"] = ECDSA_KEYS[curve]
    result = run(cfg)
    assert result.commands[0]["connection"]["hostKey"] == ECDSA_KEYS[curve]
    assert result.commands[0]["connection"]["proxy"]["hostKey"] == ECDSA_KEYS[curve]


@pytest.mark.parametrize("pinned", [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",  # cut short
    f"ecdsa-sha2-nistp384 {ECDSA_KEYS[ec.SECP256R1].split()[1]}",  # a P-256 key typed P-384
    f"ssh-ed25519 {ECDSA_KEYS[ec.SECP256R1].split()[1]}",
    "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
    "198.18.0.11 " + host_key(1),  # a known_hosts line, host name included
    "",
])
def test_a_line_that_is_not_a_whole_host_key_is_refused(stack_config, pinned):
    cfg = stack_config()
    cfg["masters"][1]["hostKey"] = pinned
    [line] = problems(cfg)
    assert line.startswith("metrics-aggregation:masters[1].hostKey: ") and "is not an SSH public host key" in line
