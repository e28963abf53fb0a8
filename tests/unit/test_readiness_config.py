"""apiserver.readyzUrl must point at the master being rolled (issue 11: a load balancer or another master
answered 200 for a master that was down), and apiserver.readySteadySeconds, how long /readyz must answer
only 200 for a master to count as ready."""

from __future__ import annotations

import pytest

from components.apiserver import flags_options
from components.config import ConfigError, parse


@pytest.mark.parametrize("url", ["https://127.0.0.1:6443/readyz", "https://127.0.0.2:6443/readyz",
                                 "https://localhost:6443/readyz", "http://LOCALHOST:8080/readyz"])
def test_loopback_urls_are_accepted(stack_config, url):
    assert parse(stack_config(apiserver={"readyzUrl": url})).apiserver.readyz_url == url


@pytest.mark.parametrize("url", ["https://198.18.0.10:6443/readyz", "https://k8s-api.example.com:6443/readyz",
                                 "https://10.0.0.100/readyz"])
def test_another_host_is_refused_naming_the_key(stack_config, url):
    """198.18.0.10 is master1's own address: with three masters it is still another master for the others."""
    with pytest.raises(ConfigError) as info:
        parse(stack_config(apiserver={"readyzUrl": url}))
    [line] = info.value.problems
    assert line.startswith("metrics-aggregation:apiserver.readyzUrl: "), line
    assert "is not master" in line and "https://127.0.0.1:6443/readyz" in line, line


def test_a_single_masters_own_address_is_accepted(stack_config):
    cfg = stack_config(1, apiserver={"readyzUrl": "https://198.18.0.10:6443/readyz"})
    assert parse(cfg).apiserver.readyz_url == "https://198.18.0.10:6443/readyz"


@pytest.mark.parametrize("value", [0, 301, -1])
def test_steady_seconds_out_of_range_are_refused(stack_config, value):
    with pytest.raises(ConfigError, match=r"apiserver.readySteadySeconds: .* must be 1..300"):
        parse(stack_config(apiserver={"readySteadySeconds": value}))


def test_steady_seconds_must_fit_in_the_ready_timeout(stack_config):
    with pytest.raises(ConfigError, match=r"apiserver.readySteadySeconds: 10 must be less than apiserver.readyTimeoutSeconds \(10\)"):
        parse(stack_config(apiserver={"readySteadySeconds": 10, "readyTimeoutSeconds": 10}))


def test_steady_seconds_reach_the_host_script_only_when_set(stack_config):
    s = parse(stack_config(apiserver={"readySteadySeconds": 5}))
    assert ("--ready-steady-seconds", "5") in flags_options(s, s.masters[0])
    s = parse(stack_config())
    assert all(k != "--ready-steady-seconds" for k, _ in flags_options(s, s.masters[0]))


# apiserver.containerName (static-pod: which container of the manifest is kube-apiserver)
def test_container_name_reaches_static_pod_masters_only(stack_config):
    cfg = stack_config(apiserver={"containerName": "apiserver"})
    cfg["masters"][1]["layout"] = "static-pod"
    s = parse(cfg)
    assert ("--container", "apiserver") in flags_options(s, s.masters[1])
    assert all(k != "--container" for k, _ in flags_options(s, s.masters[0]))
    from components.apiserver import verify_options

    assert ("--container", "apiserver") in verify_options(s, s.masters[1])


@pytest.mark.parametrize("name", ["Kube-apiserver", "-x", "a b", "x" * 64, "kube_apiserver", ""])
def test_container_names_that_are_no_dns_label_are_refused(stack_config, name):
    with pytest.raises(ConfigError) as info:
        parse(stack_config(apiserver={"containerName": name}))
    [line] = info.value.problems
    assert line.startswith("metrics-aggregation:apiserver.containerName: ") and "DNS label" in line, line
