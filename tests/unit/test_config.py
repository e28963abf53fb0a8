"""Bad stack config stops the program before any resource is registered, naming key, value and fix."""

from __future__ import annotations

import runpy
from pathlib import Path

import pulumi
import pytest

from components.apiserver import config_path, restart_command
from components.config import ConfigError, parse
from tests.support.program import config_values, run
from tests.unit.hostkeys import host_key

ROOT = Path(__file__).resolve().parents[2]
CA_PEM = (ROOT / "Pulumi.prod.yaml").read_text().split("kubeletCaCertPem: |\n", 1)[1]
CA_PEM = "\n".join(line.strip() for line in CA_PEM.splitlines() if line.startswith("      ")) + "\n"


def dup_masters(field: str):
    def change(cfg):
        cfg["masters"][2][field] = cfg["masters"][0][field]
    return change


# (case id, change to a valid config, expected key path, expected value text, words of the fix)
BAD = [
    ("no masters", lambda c: c.update(masters=[]), "masters", "[]", "at least one master"),
    ("masters missing", lambda c: c.pop("masters"), "masters", "(missing)", "list the masters"),
    ("duplicate name", dup_masters("name"), "masters[2].name", "'master1'", "duplicates masters[0].name"),
    ("duplicate address", dup_masters("address"), "masters[2].address", "'198.18.0.10'", "duplicates masters[0].address"),
    ("address not ip or dns", lambda c: c["masters"][1].update(address="10.0.0.300"), "masters[1].address", "'10.0.0.300'", "neither an IP address nor a DNS name"),
    ("address with port", lambda c: c["masters"][0].update(address="host:22"), "masters[0].address", "'host:22'", "no port"),
    ("same common names", lambda c: c["pki"].update(caCommonName="agg", proxyClientCommonName="agg"), "pki.caCommonName", "'agg'", "different subjects"),
    ("rsa too small", lambda c: c["pki"].update(rsaBits=1024), "pki.rsaBits", "1024", "use 2048"),
    ("unknown curve", lambda c: c["pki"].update(keyAlgorithm="ECDSA", ecdsaCurve="P192"), "pki.ecdsaCurve", "'P192'", "'P256'"),
    ("unknown key algorithm", lambda c: c["pki"].update(keyAlgorithm="DSA"), "pki.keyAlgorithm", "'DSA'", "'RSA' or 'ECDSA'"),
    ("unknown layout", lambda c: c["apiserver"].update(layout="docker"), "apiserver.layout", "'docker'", "'env-file', 'systemd-unit' or 'static-pod'"),
    # the checks below were made again by the host script (layout, readyz URL, timeout) until issue 12
    ("unknown layout, verify only", lambda c: c["apiserver"].update(manage=False, layout="kubeadm"), "apiserver.layout", "'kubeadm'", "'env-file', 'systemd-unit' or 'static-pod'"),
    ("readyz url not http", lambda c: c["apiserver"].update(readyzUrl="ftp://127.0.0.1:6443/readyz"), "apiserver.readyzUrl", "'ftp://127.0.0.1:6443/readyz'", "http(s) URL"),
    ("ready timeout too long", lambda c: c["apiserver"].update(readyTimeoutSeconds=3601), "apiserver.readyTimeoutSeconds", "3601", "at most 3600"),
    ("ssh port zero", lambda c: c["ssh"].update(port=0), "ssh.port", "0", ">= 1"),
    ("ssh port too big", lambda c: c["ssh"].update(port=65536), "ssh.port", "65536", "<= 65535"),
    ("master port too big", lambda c: c["masters"][1].update(port=70000), "masters[1].port", "70000", "<= 65535"),
    ("no private key", lambda c: c["ssh"].pop("privateKey"), "ssh.privateKey", "(missing)", "pulumi config set --secret --path ssh.privateKey"),
    ("leaf outlives ca", lambda c: c["pki"].update(caValidityHours=1000, certValidityHours=2000, earlyRenewalHours=10), "pki.certValidityHours", "2000", "caValidityHours (1000)"),
    ("early renewal too long", lambda c: c["pki"].update(certValidityHours=720, earlyRenewalHours=720), "pki.earlyRenewalHours", "720", "lower earlyRenewalHours"),
    ("insecure and ca", lambda c: c["metricsServer"].update(kubeletInsecureTls=True, kubeletCaCertPem=CA_PEM), "metricsServer.kubeletInsecureTls", "True", "choose one"),
    ("host network on kubelet port", lambda c: c["metricsServer"].update(hostNetwork=True), "metricsServer.containerPort", "10250", "4443"),
    ("ready timeout zero", lambda c: c["apiserver"].update(readyTimeoutSeconds=0), "apiserver.readyTimeoutSeconds", "0", "positive"),
    ("ready timeout negative", lambda c: c["apiserver"].update(readyTimeoutSeconds=-5), "apiserver.readyTimeoutSeconds", "-5", "positive"),
    ("unknown allowed use", lambda c: c["pki"].update(proxyClientAllowedUses=["clientAuth", "client_auth"]), "pki.proxyClientAllowedUses[0]", "'clientAuth'", "dropped silently"),
    ("client_auth missing", lambda c: c["pki"].update(proxyClientAllowedUses=["digital_signature"]), "pki.proxyClientAllowedUses", "['digital_signature']", "add client_auth"),
    ("misspelt key", lambda c: c["apiserver"].update(readyTimeout=5), "apiserver.readyTimeout", "its value is not shown", "not a known key"),
    ("misspelt top-level key", lambda c: c.update(mastres=[]), "mastres", "", "not a known key"),
    ("bad host key", lambda c: c["masters"][0].update(hostKey="AAAA"), "masters[0].hostKey", "'AAAA'", "ssh-keyscan"),
    ("relative config path", lambda c: c["apiserver"].update(configPath="etc/kube.conf"), "apiserver.configPath", "'etc/kube.conf'", "absolute path"),
    ("bad SAN", lambda c: c["pki"].update(hosts=["ok.example", "bad_name!"]), "pki.hosts[1]", "'bad_name!'", "neither an IP address nor a DNS name"),
    # metrics-server v0.9 panics at start when the resolution is not longer than its 10s kubelet timeout
    ("resolution equals kubelet timeout", lambda c: c["metricsServer"].update(metricResolution="10s"), "metricsServer.metricResolution", "'10s'", "longer than 10s"),
    ("empty restart command", lambda c: c["apiserver"].update(restartCommand=""), "apiserver.restartCommand", "''", "needs a restart command"),
    # apiserver.manage: false writes nothing on the masters: settings that only say what to write are refused
    ("extra flags unmanaged", lambda c: c["apiserver"].update(manage=False, extraFlags={"--v": 2}), "apiserver.extraFlags", "{'--v': '2'}", "apiserver.manage is false"),
    ("master extra flags unmanaged", lambda c: (c["apiserver"].update(manage=False), c["masters"][1].update(extraFlags={"--v": 2})), "masters[1].extraFlags", "{'--v': '2'}", "kubeadm: ClusterConfiguration.apiServer.extraArgs"),
    ("manage not a bool", lambda c: c["apiserver"].update(manage="maybe"), "apiserver.manage", "'maybe'", "true or false"),
    # issue 14's metricsServer keys (every rule: test_metrics_server_config.py); here: nothing is registered
    ("own metrics-server flag", lambda c: c["metricsServer"].update(extraArgs={"--secure-port": 4443}), 'metricsServer.extraArgs["--secure-port"]', "4443", "set metricsServer.containerPort instead"),
    ("selector pod label", lambda c: c["metricsServer"].update(podLabels={"k8s-app": "x"}), 'metricsServer.podLabels["k8s-app"]', "'x'", "choose another key"),
    ("budget blocking drains", lambda c: c["metricsServer"].update(podDisruptionBudget={"minAvailable": 1}), "metricsServer.podDisruptionBudget.minAvailable", "1", "every node drain would block"),
]


@pytest.mark.parametrize("change, path, value, fix", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_stops_before_any_resource(stack_config, change, path, value, fix):
    cfg = stack_config()
    change(cfg)
    with pytest.raises(ConfigError) as info:
        run(cfg)
    line = next((p for p in info.value.problems if p.startswith(f"metrics-aggregation:{path}:")), None)
    assert line is not None, f"no problem names {path}: {info.value.problems}"
    assert value in line and fix in line, line
    assert info.value.registrations == [] or all(  # only the root stack may exist
        r.type == "pulumi:pulumi:Stack" for r in info.value.registrations
    )


def test_every_problem_is_reported_at_once(stack_config):
    cfg = stack_config()
    cfg["ssh"]["port"] = 0
    cfg["apiserver"]["layout"] = "docker"
    cfg["pki"]["rsaBits"] = 1024
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert len(info.value.problems) == 3, info.value.problems
    text = str(info.value)
    assert "3 problems" in text and "nothing was changed" in text


def test_agent_socket_replaces_private_key(stack_config):
    cfg = stack_config()
    cfg["ssh"].pop("privateKey")
    cfg["ssh"]["agentSocketPath"] = "/run/user/1000/ssh-agent.sock"
    result = run(cfg)
    conn = result.commands[0]["connection"]
    assert conn["agentSocketPath"] == "/run/user/1000/ssh-agent.sock" and "privateKey" not in conn


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_agent_socket_path_is_refused(stack_config, blank):
    """pulumi-command provider/pkg/provider/remote/connection.go (SSHConfig) dials a set agentSocketPath
    whatever it holds: an empty one would fail every command, even next to ssh.privateKey."""
    cfg = stack_config()
    cfg["ssh"]["agentSocketPath"] = blank
    with pytest.raises(ConfigError) as info:
        run(cfg)
    text = str(info.value)
    assert "ssh.agentSocketPath" in text and "dial unix: missing address" in text, text
    assert "pulumi config rm --path ssh.agentSocketPath" in text, text


def test_secret_value_is_never_echoed(stack_config):
    cfg = stack_config()
    cfg["ssh"]["privateKey"] = "hunter2-not-a-key"
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert "hunter2" not in str(info.value)
    assert "ssh.privateKey: '<secret>'" in str(info.value)


def test_main_raises_run_error_without_traceback_noise(stack_config, monkeypatch):
    """`pulumi up` shows a RunError as a plain message: the program entry point must raise one."""
    from tests.support.mocks import Mocks

    cfg = stack_config()
    cfg["pki"]["rsaBits"] = 512
    pulumi.runtime.set_mocks(Mocks(), project="metrics-aggregation", stack="test", preview=True)
    pulumi.runtime.set_all_config(config_values(cfg))
    monkeypatch.chdir(ROOT)
    with pytest.raises(pulumi.RunError, match=r"metrics-aggregation:pki.rsaBits: 512 is below 2048"):
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")


def test_defaults_follow_layout(stack_config):
    s = parse({**stack_config(), "apiserver": {"layout": "static-pod"}})
    m = s.masters[0]
    assert config_path(s, m) == "/etc/kubernetes/manifests/kube-apiserver.yaml"
    assert restart_command(s, m) == ""
    override = parse({**stack_config(), "masters": [{"name": "a", "address": "a.example", "layout": "systemd-unit",
                                                                  "hostKey": host_key(0)}]})
    a = override.masters[0]
    assert config_path(override, a) == "/etc/systemd/system/kube-apiserver.service"
    assert "daemon-reload" in restart_command(override, a)
