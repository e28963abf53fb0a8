"""apiserver.extraFlags and masters[].extraFlags: validated, merged per master (the master wins), sent to
each master with the aggregation flags (apply and revert alike), and only the common set in the output."""

from __future__ import annotations

import shlex

import pytest

from components.apiserver import apiserver_flags
from components.config import ConfigError, parse
from components.contract import MANAGED_FLAGS
from components.errors import MANAGED_FLAG_ADVICE
from tests.support.program import run


def flag_args(command: str) -> dict[str, str]:
    """The `--flag NAME=VALUE` arguments of a host command line, as a dict (a repeated name fails)."""
    argv = shlex.split(command)
    pairs = [argv[i + 1].partition("=") for i, a in enumerate(argv) if a == "--flag"]
    names = [n for n, _, _ in pairs]
    assert len(names) == len(set(names)), f"a flag given twice: {names}"
    return {n: v for n, _, v in pairs}


def flags_step(result, master: str) -> dict:
    return next(c for c in result.commands if c["name"] == f"{master}-flags")


def problems_of(cfg) -> list[str]:
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert info.value.registrations == [] or all(  # nothing but the root stack was registered
        r.type == "pulumi:pulumi:Stack" for r in info.value.registrations
    )
    return info.value.problems


def test_extra_flags_merge_per_master_and_reach_apply_and_revert(stack_config):
    cfg = stack_config(apiserver={"extraFlags": {"--requestheader-uid-headers": "X-Remote-Uid",
                                                 "--max-requests-inflight": 800}})
    cfg["masters"][1]["extraFlags"] = {"--max-requests-inflight": 1200, "--profiling": False}
    result = run(cfg)

    aggregation = dict(result.outputs["apiserverFlags"])
    for name in ("--requestheader-uid-headers", "--max-requests-inflight"):
        aggregation.pop(name)
    common = {"--requestheader-uid-headers": "X-Remote-Uid", "--max-requests-inflight": "800"}
    expected = {
        "master1": {**aggregation, **common},
        "master2": {**aggregation, **common, "--max-requests-inflight": "1200", "--profiling": "false"},
        "master3": {**aggregation, **common},
    }
    for master, flags in expected.items():
        step = flags_step(result, master)
        assert flag_args(step["create"]) == flags, master
        assert flag_args(step["update"]) == flags, master
        # revert gets the same flag set: it removes exactly what apply set
        assert flag_args(step["delete"]) == flags, master
        assert " revert " in step["delete"] and " apply " in step["create"]
        assert flag_args(step["create"]) == apiserver_flags(result.settings,
            next(m for m in result.settings.masters if m.name == master))

    # the output: the aggregation flags plus apiserver.extraFlags; no master's own flags or overrides
    assert result.outputs["apiserverFlags"] == {**aggregation, **common}
    assert set(aggregation) == set(MANAGED_FLAGS)


def test_extra_flags_are_sorted_so_key_order_does_not_rerun_a_master(stack_config):
    one = stack_config(apiserver={"extraFlags": {"--v": 2, "--audit-log-maxage": 7, "--profiling": True}})
    two = stack_config(apiserver={"extraFlags": {"--profiling": True, "--v": 2, "--audit-log-maxage": 7}})
    a, b = run(one), run(two)
    assert [c["create"] for c in a.commands] == [c["create"] for c in b.commands]
    assert list(flag_args(a.commands[1]["create"]))[-3:] == ["--audit-log-maxage", "--profiling", "--v"]


def test_yaml_numbers_and_booleans_become_flag_text(stack_config):
    cfg = stack_config(apiserver={"extraFlags": {"--v": 2, "--profiling": False, "--anonymous-auth": True,
                                                 "--runtime-config": "api/all=true"}})
    flags = apiserver_flags(parse(cfg))
    assert flags["--v"] == "2" and flags["--profiling"] == "false" and flags["--anonymous-auth"] == "true"
    assert flags["--runtime-config"] == "api/all=true"


def test_per_master_cert_dir_and_extra_flags_come_from_the_master(stack_config):
    cfg = stack_config(n_masters=2)
    cfg["masters"][1].update(layout="static-pod", extraFlags={"--v": "4"})
    s = parse(cfg)
    m1, m2 = s.masters
    assert apiserver_flags(s, m2)["--proxy-client-cert-file"] == "/etc/kubernetes/pki/aggregator.pem"
    assert apiserver_flags(s, m2)["--v"] == "4" and "--v" not in apiserver_flags(s, m1)
    assert apiserver_flags(s, m1)["--proxy-client-cert-file"] == "/etc/kubernetes/ssl/aggregator.pem"


def test_apiserver_flags_refuses_a_cert_dir_argument(stack_config):
    """The old signature took a cert dir: such a caller must fail loudly, not lose the master's flags."""
    s = parse(stack_config())
    with pytest.raises(TypeError, match=r"takes a Master"):
        apiserver_flags(s, "/etc/kubernetes/ssl")


@pytest.mark.parametrize("flag", sorted(MANAGED_FLAGS))
def test_managed_flags_are_refused_with_the_setting_to_use(stack_config, flag):
    cfg = stack_config(apiserver={"extraFlags": {flag: "x"}})
    cfg["masters"][1]["extraFlags"] = {flag: "y"}
    problems = problems_of(cfg)
    for path in ("apiserver.extraFlags", "masters[1].extraFlags"):
        line = next(p for p in problems if p.startswith(f"metrics-aggregation:{path}: "))
        assert f"'{flag}' is a flag this program manages itself" in line, line
        assert MANAGED_FLAG_ADVICE[flag] in line
    assert len(problems) == 2, problems


def test_the_managed_set_is_what_the_program_sets(stack_config):
    assert set(apiserver_flags(parse(stack_config()))) == set(MANAGED_FLAGS)


def test_other_requestheader_flags_are_allowed(stack_config):
    s = parse(stack_config(apiserver={"extraFlags": {"--requestheader-uid-headers": "X-Remote-Uid"}}))
    assert apiserver_flags(s)["--requestheader-uid-headers"] == "X-Remote-Uid"


# (case id, extraFlags of masters[1], expected key path, expected value text, words of the fix)
BAD = [
    ("no dashes", {"requestheader-uid-headers": "X"}, "masters[1].extraFlags", "'requestheader-uid-headers'",
     "e.g. '--requestheader-uid-headers'"),
    ("upper case", {"--V": "2"}, "masters[1].extraFlags", "'--V'", "lowercase letters"),
    ("value in the key", {"--v=2": "x"}, "masters[1].extraFlags", "'--v=2'", "the value apart"),
    ("single dash", {"-v": "2"}, "masters[1].extraFlags", "'-v'", "write it as --name"),
    ("space in value", {"--audit-log-path": "/var/log/a b.log"}, 'masters[1].extraFlags["--audit-log-path"]',
     "'/var/log/a b.log'", "no spaces"),
    ("dollar in value", {"--etcd-prefix": "$HOME"}, 'masters[1].extraFlags["--etcd-prefix"]', "'$HOME'", "'$'"),
    ("quote in value", {"--etcd-prefix": 'a"b'}, 'masters[1].extraFlags["--etcd-prefix"]', "'a\"b'", "quotes"),
    ("empty value", {"--etcd-prefix": ""}, 'masters[1].extraFlags["--etcd-prefix"]', "''", "one word"),
    ("float", {"--goaway-chance": 0.001}, 'masters[1].extraFlags["--goaway-chance"]', "0.001", "quote it"),
    ("list", {"--etcd-servers": ["a", "b"]}, 'masters[1].extraFlags["--etcd-servers"]', "['a', 'b']",
     "must be a string"),
    ("null", {"--v": None}, 'masters[1].extraFlags["--v"]', "", "has no value"),
    ("not a mapping", ["--v=2"], "masters[1].extraFlags", "['--v=2']", "must be a mapping"),
]


@pytest.mark.parametrize("flags, path, value, fix", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_extra_flags_name_key_value_and_fix(stack_config, flags, path, value, fix):
    cfg = stack_config()
    cfg["masters"][1]["extraFlags"] = flags
    problems = problems_of(cfg)
    line = next((p for p in problems if p.startswith(f"metrics-aggregation:{path}: ")), None)
    assert line is not None, f"no problem names {path}: {problems}"
    assert value in line and fix in line, line


def test_every_bad_flag_is_reported_at_once(stack_config):
    cfg = stack_config(apiserver={"extraFlags": {"--enable-aggregator-routing": False, "--v": "a b"}})
    cfg["masters"][0]["extraFlags"] = {"V": 1}
    cfg["ssh"]["port"] = 0
    problems = problems_of(cfg)
    assert len(problems) == 4, problems
