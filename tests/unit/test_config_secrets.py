"""Config errors never echo a secret: not the value of a key the program does not know (a misspelt key
may well be a secret: `ssh.privateKeyPasword`), nor of a secret key whose value is refused (issue 11)."""

from __future__ import annotations

import pytest

from components.config import ConfigError, parse
from tests.support.program import run

SECRET = "hunter2-SECRET"


def refused(cfg, *, through_pulumi: bool = True) -> str:
    with pytest.raises(ConfigError) as info:
        run(cfg) if through_pulumi else parse(cfg)
    return str(info.value)


def misspelt(where):
    def change(cfg):
        node = cfg
        for part in where[:-1]:
            node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
        node[where[-1]] = SECRET
    return change


# (case id, change, key path the message must name)
UNKNOWN_KEYS = [
    ("ssh.privateKeyPasword", misspelt(("ssh", "privateKeyPasword")), "ssh.privateKeyPasword"),
    ("ssh.privatekey", misspelt(("ssh", "privatekey")), "ssh.privatekey"),
    ("ssh.bastion.privateKy", lambda c: c["ssh"].update(bastion={"host": "198.18.0.99", "privateKy": SECRET}),
     "ssh.bastion.privateKy"),
    ("masters[1].privateKey", misspelt(("masters", 1, "privateKey")), "masters[1].privateKey"),
    ("pki.existingCa.keypem", lambda c: c["pki"].update(existingCa={"certPem": "x", "keypem": SECRET}),
     "pki.existingCa.keypem"),
    ("metricsServer.token", misspelt(("metricsServer", "token")), "metricsServer.token"),
    # inside the Kubernetes objects of issue 14's keys
    ("metricsServer.tolerations[0].tokn", lambda c: c["metricsServer"].update(tolerations=[{"key": "a", "tokn": SECRET}]),
     "metricsServer.tolerations[0].tokn"),
    ("metricsServer.resources.limits.token", lambda c: c["metricsServer"].update(resources={"limits": {"token": SECRET}}),
     "metricsServer.resources.limits.token"),
]


@pytest.mark.parametrize("change, key", [u[1:] for u in UNKNOWN_KEYS], ids=[u[0] for u in UNKNOWN_KEYS])
def test_an_unknown_key_is_named_but_its_value_never_shown(stack_config, change, key):
    cfg = stack_config()
    change(cfg)
    text = refused(cfg)
    assert f"metrics-aggregation:{key}:" in text and "not a known key" in text, text
    assert SECRET not in text and "hunter2" not in text, text


def test_an_unknown_top_level_key_is_named_but_its_value_never_shown(stack_config):
    cfg = stack_config()
    cfg["sshPrivateKeyPassword"] = SECRET
    text = refused(cfg)  # through pulumi config, as `pulumi up` reads it
    assert "metrics-aggregation:sshPrivateKeyPassword: is not a known key" in text and SECRET not in text, text
    direct = refused(cfg, through_pulumi=False)  # parse() called directly with the same mapping
    assert "metrics-aggregation:sshPrivateKeyPassword:" in direct and SECRET not in direct, direct


def test_a_top_level_value_that_is_not_json_is_not_shown(stack_config):
    """pulumi's Config.get_object quotes the raw value in its error: `ssh` set to a bare secret string."""
    cfg = stack_config()
    cfg["ssh"] = SECRET + " {"
    text = refused(cfg)
    assert "metrics-aggregation:ssh:" in text and SECRET not in text, text


@pytest.mark.parametrize("key, value", [
    ("privateKeyPassword", 123456789),
    ("privateKeyPassword", [SECRET]),
    ("privateKey", 987654321),
    ("privateKey", {"pem": SECRET}),
])
def test_a_secret_key_of_the_wrong_type_is_not_shown(stack_config, key, value):
    cfg = stack_config()
    cfg["ssh"][key] = value
    text = refused(cfg)
    assert f"metrics-aggregation:ssh.{key}: '<secret>'" in text, text
    assert str(value) not in text and SECRET not in text, text


def test_a_bastion_key_of_the_wrong_type_is_not_shown(stack_config):
    cfg = stack_config(ssh={"bastion": {"host": "198.18.0.99", "privateKey": 424242424242}})
    text = refused(cfg)
    assert "metrics-aggregation:ssh.bastion.privateKey: '<secret>'" in text and "424242424242" not in text, text


def test_ssh_itself_as_a_string_is_not_shown(stack_config):
    """`ssh` holds secrets: a scalar given in its place (a key pasted at the wrong level) is not shown."""
    cfg = stack_config()
    cfg["ssh"] = [SECRET]
    text = refused(cfg)
    assert "metrics-aggregation:ssh:" in text and SECRET not in text, text
