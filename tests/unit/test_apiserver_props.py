"""ApiserverAggregation records what every master's flags step sets (contract.APISERVER_MASTERS), as its
input and output, for the policy pack: the same flags as the step's command line, and no URN changes.
The paths and flags a master gets are derived in components/apiserver.py."""

from __future__ import annotations

import pytest

from components import contract
from components.apiserver import LAYOUT_DEFAULTS, apiserver_flags, cert_dir
from components.config import ConfigError, Layout, parse
from tests.support.program import run
from tests.unit.test_extra_flags import flag_args

STACK = "urn:pulumi:test::metrics-aggregation::"
APISERVER = f"{STACK}pulumi:pulumi:Stack${contract.APISERVER_TYPE}::apiserver"


def test_the_component_records_each_master_s_flags_step(stack_config):
    cfg = stack_config(apiserver={"extraFlags": {"--v": 2}})
    cfg["masters"][1].update(layout="static-pod", extraFlags={"--profiling": False})
    result = run(cfg)
    [component] = result.of_type(contract.APISERVER_TYPE)
    recorded = component.inputs[contract.APISERVER_MASTERS]
    assert [m[contract.MASTER_NAME] for m in recorded] == [m.name for m in result.settings.masters]
    for entry, master in zip(recorded, result.settings.masters, strict=True):
        step = next(c for c in result.commands if c["name"] == entry[contract.MASTER_FLAGS_STEP])
        assert entry[contract.MASTER_FLAGS] == flag_args(step["create"]) == apiserver_flags(result.settings, master)
        assert entry[contract.MASTER_CERT_DIR] == cert_dir(result.settings, master)
        assert f"--cert-dir {entry[contract.MASTER_CERT_DIR]} " in step["create"]
    assert recorded[1][contract.MASTER_FLAGS]["--profiling"] == "false"
    assert recorded[1][contract.MASTER_CERT_DIR] == "/etc/kubernetes/pki"


def test_nothing_is_recorded_without_managed_masters(stack_config):
    result = run(stack_config(apiserver={"manage": False}))
    [component] = result.of_type(contract.APISERVER_TYPE)
    assert component.inputs[contract.APISERVER_MASTERS] == []


def test_urns_are_those_of_before_the_component_had_inputs(stack_config):
    """The component's type and name, its steps' and the proxy-client certificate's: a preview of an
    existing stack changes the component's inputs (an update of a component, nothing on the masters) and
    replaces nothing."""
    urns = {r.urn for r in run(stack_config(n_masters=2)).resources}
    step = f"{STACK}{contract.APISERVER_TYPE}$command:remote:Command::"
    proxy = f"{STACK}metrics-aggregation:pki:ProxyClientCert$tls:index/"
    assert {
        APISERVER,
        f"{step}master1-certs", f"{step}master1-flags", f"{step}master2-certs", f"{step}master2-flags",
        f"{proxy}certRequest:CertRequest::proxy-client",
        f"{proxy}locallySignedCert:LocallySignedCert::proxy-client",
        f"{proxy}privateKey:PrivateKey::proxy-client-key",
    } <= urns


@pytest.mark.parametrize("layout", [lay for lay in Layout if lay is not Layout.STATIC_POD])
def test_every_layout_but_static_pod_has_a_restart_command(layout, stack_config):
    """Config validation refuses only an empty restartCommand given for such a layout: it relies on this."""
    assert LAYOUT_DEFAULTS[layout]["restart_command"].strip()
    parse(stack_config(apiserver={"layout": layout.value}))
    with pytest.raises(ConfigError, match=r"apiserver.restartCommand: '' is empty but masters\[0\]"):
        parse(stack_config(apiserver={"layout": layout.value, "restartCommand": ""}))


def test_the_managed_flags_come_in_the_contract_s_order(stack_config):
    flags = apiserver_flags(parse(stack_config(apiserver={"extraFlags": {"--a-flag": "x"}})))
    assert tuple(flags)[: len(contract.MANAGED_FLAGS)] == contract.MANAGED_FLAGS
