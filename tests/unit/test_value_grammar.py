"""One value grammar (components/config.py VALUE_PATTERN) for every value that reaches a master's
kube-apiserver config or the host script's options: refused at config load, naming the key (issue 11)."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from components.config import VALUE_PATTERN, ConfigError, is_safe_value
from tests.support.program import run

# the flag-injection and quoting cases of issue 11, and the characters a path must not carry
HOSTILE = {
    "second flags": "aggregator --authorization-mode=AlwaysAllow --anonymous-auth=true",
    "command substitution": "agg$(id>/tmp/x)",
    "backquotes": "agg`id`",
    "double quote": 'agg"x',
    "single quote": "agg'x",
    "space": "/etc/kubernetes/my ssl",
    "semicolon": "/etc/kubernetes/ssl;reboot",
    "percent (systemd specifier)": "/etc/kubernetes/%h",
    "hash (comment)": "/etc/kubernetes/ssl#x",
    "carriage return": "/etc/kubernetes/ssl\r",
    "tab": "/etc/kubernetes/\tssl",
    "trailing newline": "/etc/kubernetes/ssl\n",
    "backslash": "/etc/kubernetes/ssl\\",
    "non-ascii": "/etc/kubernetes/sßl",
}


def problem_for(cfg, key: str) -> str:
    with pytest.raises(ConfigError) as info:
        run(cfg)
    line = next((p for p in info.value.problems if p.startswith(f"metrics-aggregation:{key}:")), None)
    assert line is not None, f"no problem names {key}: {info.value.problems}"
    assert info.value.registrations == [] or all(r.type == "pulumi:pulumi:Stack" for r in info.value.registrations)
    return line


def as_name(value: str) -> str:
    return value.lstrip("/").replace("/", "-")


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_proxy_client_cn_outside_the_grammar_is_refused(stack_config, value):
    line = problem_for(stack_config(pki={"proxyClientCommonName": as_name(value)}), "pki.proxyClientCommonName")
    assert "--requestheader-allowed-names" in line and "one word of letters" in line, line
    assert "\r" not in line and "\t" not in line and "\n" not in line  # the value is shown escaped


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("key", ["certDir", "configPath"])
def test_paths_outside_the_grammar_are_refused(stack_config, key, value):
    path = value if value.startswith("/") else "/etc/" + value
    line = problem_for(stack_config(apiserver={"layout": "env-file", key: path}), f"apiserver.{key}")
    assert "a path on the master" in line, line


def test_a_masters_config_path_follows_the_grammar(stack_config):
    cfg = stack_config()
    cfg["masters"][1]["configPath"] = "/etc/kubernetes/kube apiserver.conf"
    assert "a path on the master" in problem_for(cfg, "masters[1].configPath")


@pytest.mark.parametrize("url", ["https://127.0.0.1:6443/readyz --x", "https://127.0.0.1:6443/$(id)",
                                 "https://127.0.0.1:6443/readyz\n", "https://127.0.0.1:6443/ready%7a"])
def test_readyz_url_outside_the_grammar_is_refused(stack_config, url):
    assert "readyz URL" in problem_for(stack_config(apiserver={"readyzUrl": url}), "apiserver.readyzUrl")


def test_extra_flag_value_with_a_final_newline_is_refused(stack_config):
    """The old check used re.match with '$', which also matches before a final newline."""
    line = problem_for(stack_config(apiserver={"extraFlags": {"--v": "2\n"}}), 'apiserver.extraFlags["--v"]')
    assert "'2\\n'" in line and "a flag value" in line, line


def test_several_problems_each_name_their_key(stack_config):
    cfg = stack_config(pki={"proxyClientCommonName": "a b"}, apiserver={"certDir": "/x y", "readyzUrl": "https://a/ b"})
    with pytest.raises(ConfigError) as info:
        run(cfg)
    keys = sorted(p.split(":", 2)[1] for p in info.value.problems)
    assert keys == ["apiserver.certDir", "apiserver.readyzUrl", "pki.proxyClientCommonName"], info.value.problems


def test_usual_values_pass(stack_config):
    result = run(stack_config(
        pki={"proxyClientCommonName": "front-proxy-client"},
        apiserver={"certDir": "/etc/kubernetes/pki/front-proxy", "configPath": "/etc/kubernetes/kube-apiserver.conf",
                   "readyzUrl": "https://localhost:6443/readyz",
                   "extraFlags": {"--requestheader-uid-headers": "X-Remote-Uid", "--v": 2}},
    ))
    assert result.outputs["requestheaderAllowedNames"] == ["front-proxy-client"]


def script_options(line: str) -> list[tuple[str, str]]:
    """The (--option, value) pairs after `--master` in a host command line, inside `sh -c '...'` too."""
    argv = shlex.split(line)
    if "--master" not in argv:  # the certs steps: the script runs inside `sh -c '<shell>'`
        lexer = shlex.shlex(argv[-1], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv = list(lexer)
    argv = argv[argv.index("--master"):]
    pairs = []
    while len(argv) >= 2 and argv[0].startswith("--"):
        pairs.append((argv[0], argv[1]))
        argv = argv[2:]
    return pairs


def test_every_value_the_program_hands_a_master_is_in_the_grammar(stack_config):
    """Generated values too: every option of every host command (but the restart command, a shell command
    by design) and every --flag value."""
    cfg = stack_config(apiserver={"extraFlags": {"--max-requests-inflight": 800, "--profiling": False}})
    cfg["masters"][2].update(layout="static-pod", extraFlags={"--v": 4})
    for c in run(cfg).commands:
        for field in ("create", "delete"):
            options = script_options(c[field])
            assert ("--cert-dir", "/etc/kubernetes/ssl") in options or ("--cert-dir", "/etc/kubernetes/pki") in options
            for name, value in options:
                if name == "--flag":
                    value = value.partition("=")[2]
                if name != "--restart-command":
                    assert is_safe_value(value), f"{c['name']}.{field}: {name} {value!r}"


@pytest.mark.parametrize("value", ["aggregator", "/etc/kubernetes/ssl", "https://127.0.0.1:6443/readyz", "a=b,c",
                                   "X-Remote-Uid", "*", "~user", ""] + list(HOSTILE.values()))
def test_the_pattern_means_the_same_in_bash(value):
    """VALUE_PATTERN is what the host script checks too (bash `[[ =~ ]]`, a POSIX ERE, in the C locale)."""
    p = subprocess.run(["bash", "-c", 'LC_ALL=C; [[ $1 =~ $2 ]]', "check", value, VALUE_PATTERN], check=False)
    assert (p.returncode == 0) == is_safe_value(value), value
