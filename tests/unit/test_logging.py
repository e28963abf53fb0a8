"""Every remote.Command sets `logging` deliberately (components/apiserver.py STEP_LOGGING, issue 16).

Left unset, pulumi-command streams every stdout and stderr line as a status message (pulumi-command
provider/pkg/provider/remote/commandOutputs.go, util.go LogOutput), and hangs on a line over 64 KiB
(pulumi-command issue #201). The host tier checks what the streamed output holds (tests/hosts/test_rollout.py
assert_streamed_output_is_short, assert_no_secret_in_output).
"""

from __future__ import annotations

import pulumi_command as command
import pytest

from components import apiserver
from tests.support.program import run
from tests.unit.hostkeys import host_key

REMOTE_COMMAND = "command:remote:Command"
# What a step may stream: nothing, or its stdout. No step streams stderr: the flags step's holds the tail of
# the apiserver's own log on failure, lines that are not ours to bound (the error shows them anyway).
ALLOWED = {"none", "stdout"}
STACKS = {
    "managed, with a bastion and sudo": {"ssh": {"sudo": True, "bastion": {"host": "198.18.0.99", "hostKey": host_key(9)}}},
    "apiserver.manage: false": {"apiserver": {"manage": False, "layout": "static-pod", "enableAggregatorRouting": False},
                                "metricsServer": {"manage": False}},
    "a CA rotation (trust)": {"pki": {"hosts": ["127.0.0.1"], "caGeneration": 2, "caRotation": "trust"}},
}


def unlogged(result) -> list[str]:
    """The remote commands of a run whose `logging` is unset or not an allowed choice, with what it is."""
    return [f"{r.name}: {r.inputs.get('logging')!r}" for r in result.of_type(REMOTE_COMMAND)
            if r.inputs.get("logging") not in ALLOWED]


@pytest.mark.parametrize("stack", STACKS)
def test_every_remote_command_sets_an_allowed_logging(stack_config, stack):
    result = run(stack_config(**STACKS[stack]), preview=True)
    assert result.of_type(REMOTE_COMMAND)
    assert unlogged(result) == []
    for r in result.of_type(REMOTE_COMMAND):  # each kind of step as chosen: <master>-certs, -flags, -verify
        assert r.inputs["logging"] == apiserver.STEP_LOGGING[r.name.rpartition("-")[2]].value, r.name


def test_the_choices_are_these():
    """The flags step streams its progress (a restart can take minutes); the others stream nothing: the certs
    step's stdin carries the key and its stdout data the program reads, verify is quick."""
    assert {k: v.value for k, v in apiserver.STEP_LOGGING.items()} == {"certs": "none", "flags": "stdout",
                                                                      "verify": "none"}


def test_the_check_fails_for_a_command_that_omits_logging(stack_config, monkeypatch):
    """A remote.Command made without `logging` (as a new one could be) is caught by the check above."""
    made = command.remote.Command

    def without_logging(*args, **kwargs):
        kwargs.pop("logging", None)
        return made(*args, **kwargs)

    monkeypatch.setattr(apiserver.command.remote, "Command", without_logging)
    result = run(stack_config(n_masters=1), preview=True)
    assert unlogged(result) == ["master1-certs: None", "master1-flags: None"]


def test_a_new_kind_of_step_needs_a_choice(stack_config, monkeypatch):
    """`_step` takes the choice from STEP_LOGGING: a kind of step without an entry cannot be made."""
    monkeypatch.delitem(apiserver.STEP_LOGGING, "flags")
    with pytest.raises(KeyError, match="flags"):
        run(stack_config(n_masters=1), preview=True)
