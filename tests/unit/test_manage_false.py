"""apiserver.manage: false — the apiservers already run aggregation (kubeadm's front-proxy, a hand-made
setup): no certificate, no certs or flags step; a read-only verify step per master, then metrics-server."""

from __future__ import annotations

import re
import shlex

from components.apiserver import host_files_text
from tests.support.program import run
from tests.unit.test_existing_ca import make_ca

KUBEADM = {
    "manage": False,
    "layout": "static-pod",
    "enableAggregatorRouting": False,
}


def unmanaged(stack_config, **apiserver):
    return stack_config(apiserver={**KUBEADM, **apiserver}, pki={"proxyClientCommonName": "front-proxy-client"})


def aggregator_pki(result) -> list[str]:
    """tls resources of the aggregator CA and the proxy-client cert (metrics-server's serving PKI aside)."""
    return [r.name for r in result.resources
            if r.type.startswith("tls:") and r.name.startswith(("aggregator-ca", "proxy-client"))]


def inner_argv(command: str) -> list[str]:
    """The verify step runs `sh -c '<install the script>; exec bash "$f" verify ...'`: its verify argv."""
    outer = shlex.split(command)
    assert outer[:2] == ["sh", "-c"], outer
    return shlex.split(outer[2].split('exec bash "$f" ', 1)[1])


def test_no_certificate_and_no_certs_or_flags_step(stack_config):
    result = run(unmanaged(stack_config))
    assert aggregator_pki(result) == []
    assert [c["name"] for c in result.commands] == ["master1-verify", "master2-verify", "master3-verify"]


def test_each_master_is_verified_read_only_with_the_expected_flags(stack_config):
    result = run(unmanaged(stack_config))
    for command, master in zip(result.commands, result.settings.masters, strict=True):
        argv = inner_argv(command["create"])
        assert argv[:3] == ["verify", "--master", master.name]
        pairs = list(zip(argv[1::2], argv[2::2], strict=True))
        assert ("--config-path", "/etc/kubernetes/manifests/kube-apiserver.yaml") in pairs
        assert ("--require-listed", "--requestheader-allowed-names=front-proxy-client") in pairs
        assert ("--require", "--requestheader-username-headers=X-Remote-User") in pairs
        files = {v for k, v in pairs if k == "--require-file-flag"}
        assert files == {"--requestheader-client-ca-file", "--proxy-client-cert-file", "--proxy-client-key-file"}
        # nothing this step runs writes flags or certificates
        assert not {"apply", "revert", "install-certs", "remove-certs"} & set(argv)
        assert command["update"] == command["create"]
        # the script and its editor, and only those, on stdin: no secret travels to an unmanaged master
        assert command["stdin"] == host_files_text()
        assert command["depends_on"] == []  # read-only: all masters at once


def test_every_requirement_is_well_formed(stack_config):
    """The host script no longer checks the requirements' shape (issue 12): the program builds them so.
    --require --NAME=VALUE, --require-file-flag --NAME, --require-listed --NAME=ITEM (ITEM not empty),
    each NAME a kube-apiserver flag name; --why only after a requirement."""
    name = r"--[a-z0-9]+(-[a-z0-9]+)*"
    shapes = {"--require": f"{name}=.*", "--require-file-flag": name, "--require-listed": f"{name}=.+"}
    for cfg in (unmanaged(stack_config), unmanaged(stack_config, enableAggregatorRouting=True)):
        for command in run(cfg).commands:
            argv = inner_argv(command["create"])
            pairs = list(zip(argv[1::2], argv[2::2], strict=True))
            kinds = [k for k, _ in pairs if k in shapes]
            assert kinds, argv
            for (option, value), (previous, _) in zip(pairs[1:], pairs, strict=False):
                if option in shapes:
                    assert re.fullmatch(shapes[option], value), (option, value)
                if option == "--why":
                    assert previous in shapes, argv


def test_aggregator_routing_is_required_when_the_stack_says_so(stack_config):
    argv = inner_argv(run(unmanaged(stack_config, enableAggregatorRouting=True)).commands[0]["create"])
    assert "--enable-aggregator-routing=true" in argv
    argv = inner_argv(run(unmanaged(stack_config)).commands[0]["create"])
    assert not any(a.startswith("--enable-aggregator-routing") for a in argv)


def test_metrics_server_waits_for_every_master(stack_config):
    result = run(unmanaged(stack_config))
    verify = {r.urn for r in result.of_type("command:remote:Command")}
    deployment = result.of_type("kubernetes:apps/v1:Deployment")[0]
    assert verify <= result.waits_for(deployment)


def test_outputs_say_nothing_was_set(stack_config):
    out = run(unmanaged(stack_config)).outputs
    assert out["apiserverFlags"] == {}
    assert out.get("proxyClientCertPem") is None and out.get("aggregatorCaCertPem") is None
    assert out["requestheaderAllowedNames"] == ["front-proxy-client"]
    assert out["metricsApiService"] == "v1beta1.metrics.k8s.io"


def test_the_existing_ca_is_the_ca_output(stack_config):
    ca = make_ca(cn="front-proxy-ca")
    cfg = unmanaged(stack_config)
    cfg["pki"]["existingCa"] = ca.config()
    result = run(cfg)
    assert result.outputs["aggregatorCaCertPem"] == ca.cert_pem
    assert aggregator_pki(result) == []


def test_no_restart_command_is_needed(stack_config):
    cfg = unmanaged(stack_config, layout="env-file", restartCommand="")
    assert len(run(cfg).commands) == 3


def test_managed_is_the_default_and_unchanged(stack_config):
    names = [c["name"] for c in run(stack_config(n_masters=2)).commands]
    assert names == ["master1-certs", "master1-flags", "master2-certs", "master2-flags"]


def test_metrics_server_unmanaged_deploys_nothing_of_it(stack_config):
    """metricsServer.manage: false keeps a metrics-server this program did not make (a Helm release)."""
    cfg = stack_config(metricsServer={"manage": False, "namespace": "monitoring"})
    result = run(cfg)
    assert not [r for r in result.resources if r.type.startswith("kubernetes:")]
    assert [c["name"] for c in result.commands][:2] == ["master1-certs", "master1-flags"]
    assert result.outputs["metricsApiService"] == "v1beta1.metrics.k8s.io"
    assert result.outputs["metricsServerNamespace"] == "monitoring"  # where the kept one runs


def test_main_skips_the_cluster_check_when_metrics_server_is_unmanaged(stack_config, monkeypatch):
    """A Helm release is what metricsServer.manage: false keeps: the preflight must not stop on it."""
    import runpy
    from pathlib import Path

    import pulumi

    from components import cluster_probe
    from tests.support.mocks import Mocks
    from tests.support.program import config_values

    calls = []
    monkeypatch.setattr(cluster_probe, "preflight", lambda *a, **k: calls.append(a))
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    for manage, expected in ((False, 0), (True, 1)):
        pulumi.runtime.set_mocks(Mocks(), project="metrics-aggregation", stack="test", preview=True)
        pulumi.runtime.set_all_config(config_values(stack_config(metricsServer={"manage": manage})))
        runpy.run_path(str(root / "__main__.py"), run_name="__main__")
        assert len(calls) == expected
