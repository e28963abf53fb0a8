"""The dependency graph: certificates in parallel, flags one master at a time, metrics-server last."""

from __future__ import annotations

import pytest

from tests.support.program import run


def names(result, urns):
    by_urn = {r.urn: r.name for r in result.resources}
    return {by_urn[u] for u in urns if u in by_urn}


@pytest.mark.parametrize("n", [1, 3, 7])
def test_flags_roll_one_master_after_the_other(stack_config, n):
    result = run(stack_config(n_masters=n))
    order = [m.name for m in result.settings.masters]
    for i, master in enumerate(order):
        step = result.named(f"{master}-flags")
        deps = names(result, step.dependencies)
        expected = {f"{master}-certs"} | ({f"{order[i - 1]}-flags"} if i else set())
        assert deps == expected, (master, deps)


@pytest.mark.parametrize("n", [1, 3, 7])
def test_cert_steps_are_not_serialised(stack_config, n):
    result = run(stack_config(n_masters=n))
    commands = {r.urn for r in result.of_type("command:remote:Command")}
    for m in result.settings.masters:
        step = result.named(f"{m.name}-certs")
        assert not set(step.dependencies) & commands, f"{m.name}-certs waits for another host step"
        assert names(result, step.dependencies) == {"aggregator-ca", "proxy-client", "proxy-client-key"}


@pytest.mark.parametrize("n", [1, 3, 7])
def test_metrics_server_waits_for_every_master(stack_config, n):
    result = run(stack_config(n_masters=n))
    finals = {r.urn for r in result.resources if r.name.endswith("-flags")}
    k8s = [r for r in result.resources if r.type.startswith("kubernetes:")]
    assert k8s, "metrics-server registered no Kubernetes objects"
    for r in k8s:
        assert finals <= result.waits_for(r), f"{r.type} {r.name} may start before every master is done"
    apiservice = [r for r in k8s if r.type == "kubernetes:apiregistration.k8s.io/v1:APIService"]
    assert len(apiservice) == 1


def test_components_parent_their_resources(stack_config):
    result = run(stack_config(n_masters=2))
    by_urn = {r.urn: r for r in result.resources}
    for r in result.resources:
        if r.type.startswith(("tls:", "command:")):
            parent = by_urn.get(r.parent)
            assert parent is not None and parent.type.startswith("metrics-aggregation:"), r.name


def test_logical_names_are_stable(stack_config):
    """Two runs of the same config register the same URNs: previews show only real changes."""
    a = run(stack_config(n_masters=3))
    b = run(stack_config(n_masters=3))
    assert sorted(r.urn for r in a.resources) == sorted(r.urn for r in b.resources)
    assert [c["create"] for c in a.commands] == [c["create"] for c in b.commands]


def test_changing_one_master_changes_only_its_commands(stack_config):
    base = stack_config(n_masters=3)
    changed = stack_config(n_masters=3)
    changed["masters"][1]["configPath"] = "/etc/kubernetes/apiserver.env"
    a, b = run(base).commands, run(changed).commands
    diff = {x["name"] for x, y in zip(a, b, strict=True) if (x["create"], x["delete"]) != (y["create"], y["delete"])}
    assert diff == {"master2-flags"}


def test_no_triggers_and_key_rotation_does_not_rerun(stack_config):
    result = run(stack_config())
    for r in result.of_type("command:remote:Command"):
        assert "triggers" not in r.inputs  # a trigger replaces: the old delete (revert) would run last
        assert "connection.privateKey" in r.ignore_changes
        assert r.inputs.get("addPreviousOutputInEnv") is False
