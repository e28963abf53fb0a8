"""apiserver.keyOwner: user:group of the proxy-client key on the masters, for apiservers that run as
User=kube (the key was always root:root 0600, which such an apiserver cannot read; issue 11)."""

from __future__ import annotations

import subprocess

import pytest

from components.config import KEY_OWNER_PATTERN, VALUE_PATTERN, ConfigError, parse

GOOD = ["kube:kube", "root:root", "1000:1000", "kube:1000", "_apiserver:kube-cert", "k8s_1:k8s-2",
        "a23456789012345678901234567890ab:kube", "4294967294:0"]
BAD = ["kube", "kube:", ":kube", "Kube:kube", "kube:kube:x", "kube;id:kube", "kube :kube", "kube:kube\n",
       "-kube:kube", "1kube:kube", "kube$:kube", "a234567890123456789012345678901ab:kube", "4294967295:0",
       "-1:0", "kube:$(id)", "", "kube\tx:kube"]


@pytest.mark.parametrize("owner", GOOD)
def test_usual_owners_are_accepted(stack_config, owner):
    assert parse(stack_config(apiserver={"keyOwner": owner})).apiserver.key_owner == owner


@pytest.mark.parametrize("owner", BAD)
def test_anything_else_is_refused_naming_the_key(stack_config, owner):
    with pytest.raises(ConfigError) as info:
        parse(stack_config(apiserver={"keyOwner": owner}))
    [line] = info.value.problems
    assert line.startswith("metrics-aggregation:apiserver.keyOwner: ") and "must be user:group" in line, line


def test_a_number_is_refused_not_converted(stack_config):
    with pytest.raises(ConfigError, match=r"apiserver.keyOwner: 1000 must be a string"):
        parse(stack_config(apiserver={"keyOwner": 1000}))


def test_unmanaged_apiservers_get_no_key(stack_config):
    with pytest.raises(ConfigError, match=r"apiserver.keyOwner: 'kube:kube' is set but apiserver.manage is false"):
        parse(stack_config(apiserver={"keyOwner": "kube:kube", "manage": False}))


def test_default_is_none_and_every_accepted_owner_is_in_the_value_grammar(stack_config):
    assert parse(stack_config()).apiserver.key_owner is None
    for owner in GOOD:
        assert subprocess.run(["bash", "-c", 'LC_ALL=C; [[ $1 =~ $2 && $1 =~ $3 ]]', "-", owner, KEY_OWNER_PATTERN,
                               VALUE_PATTERN], check=False).returncode == 0, owner


@pytest.mark.parametrize("owner", BAD)
def test_the_pattern_means_the_same_in_bash(owner):
    """KEY_OWNER_PATTERN is what the host script re-checks (bash [[ =~ ]], C locale); ids above the range are
    refused by a separate comparison (4294967295 is chown's -1)."""
    in_bash = subprocess.run(["bash", "-c", 'LC_ALL=C; [[ $1 =~ $2 ]]', "-", owner, KEY_OWNER_PATTERN], check=False)
    assert (in_bash.returncode == 0) == (owner == "4294967295:0"), owner


def test_the_owner_reaches_the_certs_step_only(stack_config):
    from tests.support.program import run

    for c in run(stack_config(apiserver={"keyOwner": "kube:kube"})).commands:
        for field in ("create", "delete"):
            assert ("--key-owner kube:kube" in c[field]) == c["name"].endswith("-certs"), (c["name"], field)
    assert all("--key-owner" not in c["create"] + c["delete"] for c in run(stack_config()).commands)
