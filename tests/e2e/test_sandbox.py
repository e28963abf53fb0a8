"""Engine tier on the sandbox: the real engine and providers against real kube-apiservers, etcd and
metrics-server (sandbox/cluster.py), with the committed Pulumi.sandbox.yaml moved to a free address block.

The cases run in order on one stack (module-scoped): a fault on master 2 rolls back -> fixed config
converges -> the metrics API answers through every apiserver -> metrics-server trusts only the proxy
client cert (the CA-reuse pitfall, proven both ways) -> ordinary client-cert auth still works -> a second
preview has no changes -> destroy restores every apiserver and removes the APIService.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from lab.pki import Cert, Pki
from sandbox.cluster import MASTERS, NODES, Sandbox, wait_for
from tests.e2e.engine import PROJECT, E2EStack, Project, Toolchain
from tests.e2e.sandboxes import earlier, running_sandbox, sandbox_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

METRICS_NODES = "/apis/metrics.k8s.io/v1beta1/nodes"
APISERVICE = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io"
FAULT_FLAG = "--no-such-flag-injected-by-the-fault-test"


@dataclass
class SandboxScenario:
    sb: Sandbox
    stack: E2EStack
    config: dict[str, Any]  # full keys, as written to the stack's config file
    original: dict[str, bytes]  # master -> env file bytes before anything ran
    tmp: Path
    results: dict[str, Any] = field(default_factory=dict)

    def env_file(self, master: str) -> bytes:
        return (self.sb.master_dir(master) / "etc-kubernetes" / "kube-apiserver.conf").read_bytes()

    def generation(self, master: str) -> int:
        return int((self.sb.master_dir(master) / "generation").read_text())

    def cert(self, master: str, name: str) -> Path:
        return self.sb.master_dir(master) / "etc-kubernetes" / "ssl" / name

    def require(self, key: str) -> Any:
        return earlier(self.results, key)


@pytest.fixture(scope="module")
def sandbox(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxScenario]:
    tmp = tmp_path_factory.mktemp("sbx")
    with running_sandbox(toolchain.bin_dir, tmp) as sb:
        config = sandbox_config(sb)
        original = {m: (sb.master_dir(m) / "etc-kubernetes" / "kube-apiserver.conf").read_bytes() for m in MASTERS}
        stack = Project.copy(tmp / "project").stack(toolchain, tmp / "backend", "sandbox", config)
        try:
            yield SandboxScenario(sb, stack, config, original, tmp)
        finally:
            (tmp / "engine-output.log").write_text("\n".join(stack.outputs))


# ------------------------------------------------------------------------------------------ helpers
def _ctx(cert: Path | None = None, key: Path | None = None, ca_pem: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _get(url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _issue(ca_cert_pem: bytes, ca_key_pem: bytes, cn: str, out: Path) -> tuple[Path, Path]:
    """A client certificate signed by the given CA (what anyone holding that CA's key could make)."""
    d = out / f"issued-{cn}"
    d.mkdir()
    (d / "ca.crt").write_bytes(ca_cert_pem)
    (d / "ca.key").write_bytes(ca_key_pem)
    issuer = Pki(d)
    issuer.leaf(Cert(cn, "ca", cn, client=True))
    return issuer.path(cn), issuer.path(cn, "key")


def _masters_config(s: SandboxScenario, extra: dict[str, dict[str, str]]) -> list[dict]:
    masters = copy.deepcopy(s.config[f"{PROJECT}:masters"])
    for m in masters:
        m.pop("extraFlags", None)
        if m["name"] in extra:
            m["extraFlags"] = extra[m["name"]]
    return masters


# ------------------------------------------------------------------------------------------ cases
def test_fault_on_master2_rolls_back_and_leaves_master3_alone(sandbox):
    """kube-apiserver refuses to start on master 2 (an unknown flag in that master's extraFlags)."""
    s = sandbox
    s.stack.write_config({
        f"{PROJECT}:masters": _masters_config(s, {"master2": {FAULT_FLAG: "true"}}),
        # shorter than the stack's 90 s, so the failure comes sooner; still room for master1's restart, whose
        # old process takes ~20 s to stop (the garbage collector's watches are on it, see bench/rollout.py)
        f"{PROJECT}:apiserver": {**s.config[f"{PROJECT}:apiserver"], "readyTimeoutSeconds": 45},
    })
    generations = {m: s.generation(m) for m in MASTERS}
    with pytest.raises(auto.CommandError) as err:
        s.stack.up()
    message = str(err.value)
    assert "master master2" in message and FAULT_FLAG in message, message[-3000:]
    assert "unknown flag" in message, "the apiserver's own last log lines are in the error:\n" + message[-3000:]
    # master 1 was changed and is ready; master 2 is back on its original file, restarted twice, ready
    assert b"--requestheader-client-ca-file=" in s.env_file("master1")
    assert s.env_file("master2") == s.original["master2"]
    assert s.generation("master2") == generations["master2"] + 2  # the failed start, the rollback
    for m in ("master1", "master2"):
        assert s.sb.master_api(m).ok(), f"{m} is not ready after the rollback"
    # master 3: never touched (same flags, never restarted)
    assert s.env_file("master3") == s.original["master3"]
    assert s.generation("master3") == generations["master3"]
    s.results["fault"] = True


def test_fixed_config_converges(sandbox):
    s = sandbox
    s.require("fault")
    s.stack.write_config({f"{PROJECT}:masters": _masters_config(s, {}),
                          f"{PROJECT}:apiserver": s.config[f"{PROJECT}:apiserver"]})
    result, _ = s.stack.up()
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    outputs = {k: v.value for k, v in result.outputs.items()}
    for m in MASTERS:
        text = s.env_file(m).decode()
        for flag, value in outputs["apiserverFlags"].items():
            assert f"{flag}={value}" in text, f"{m}: {flag}"
        assert FAULT_FLAG not in text
        assert s.sb.master_api(m).ok()
    s.results["outputs"] = outputs


def test_metrics_api_answers_through_every_apiserver(sandbox):
    s = sandbox
    s.require("outputs")
    api = s.sb.api()
    svc = api.get(APISERVICE)
    available = {c["type"]: c["status"] for c in svc["status"]["conditions"]}
    assert available.get("Available") == "True", svc["status"]
    s.results["serving_ca"] = base64.b64decode(svc["spec"]["caBundle"]).decode()
    for m in MASTERS:
        def nodes(m=m):
            body = s.sb.master_api(m).get(METRICS_NODES)
            items = body.get("items", []) if body else []
            return items if len(items) == len(NODES) else None
        items = wait_for(nodes, f"node metrics through {m}", 90, 1.0)
        by_name = {i["metadata"]["name"]: i["usage"] for i in items}
        assert by_name["sandbox-node-2"]["memory"] == "1Gi"


def test_metrics_server_trusts_only_the_proxy_client_cert(sandbox):
    """Straight to metrics-server: the CA-reuse pitfall, proven both ways."""
    s = sandbox
    serving_ca = s.require("serving_ca")
    url = f"https://{s.sb.pods_ip}:10250{METRICS_NODES}"
    admin_headers = {"X-Remote-User": "sandbox-admin", "X-Remote-Group": "system:masters"}

    def call(cert: Path, key: Path, headers: dict[str, str]) -> tuple[int, str]:
        """(status, body), the body of a Kubernetes Status reduced to its message."""
        ctx = _ctx(cert, key, serving_ca)
        ctx.check_hostname = False  # the serving cert names the Service (kube-apiserver dials it by name)
        code, body = _get(url, ctx, headers)
        if code != 200:
            try:
                body = json.loads(body).get("message", body)
            except ValueError:
                pass
        return code, body

    # the apiservers' proxy client cert: the headers are the identity
    proxy = (s.cert("master1", "aggregator.pem"), s.cert("master1", "aggregator-key.pem"))
    code, body = call(*proxy, admin_headers)
    assert code == 200 and json.loads(body)["kind"] == "NodeMetricsList", body
    code, body = call(*proxy, {"X-Remote-User": "nobody"})
    assert code == 403 and 'User "nobody"' in body, body

    # a client cert from the CLUSTER CA (what a kubelet or user has) sending the same headers: the headers
    # are ignored, it is only itself; had the cluster CA been reused as the requestheader CA, this would be 200
    pki = s.sb.pki
    cert, key = _issue((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes(), "cluster-ca-client", s.tmp)
    code, body = call(cert, key, admin_headers)
    assert code == 403 and 'User "cluster-ca-client"' in body, body

    # a cert from the AGGREGATOR CA whose CN is not in --requestheader-allowed-names: refused too
    export = json.loads(s.stack.cli("stack", "export", "--show-secrets"))
    ca_key_pem = _aggregator_ca_key(export)
    outputs = s.require("outputs")
    assert "intruder" not in outputs["requestheaderAllowedNames"]
    cert, key = _issue(outputs["aggregatorCaCertPem"].encode(), ca_key_pem.encode(), "intruder", s.tmp)
    code, body = call(cert, key, admin_headers)
    assert code == 401, (code, body)
    log = (s.sb.dir / "pods" / "metrics-server" / "metrics-server.log").read_text(errors="replace")
    assert "cn=intruder is not in the allowed list" in log, log[-2000:]


def _aggregator_ca_key(export: dict) -> str:
    for r in export["deployment"]["resources"]:
        if r["type"] == "tls:index/privateKey:PrivateKey" and "AggregatorCA" in r["urn"]:
            v = r["outputs"]["privateKeyPem"]
            if isinstance(v, dict):  # {"<sig>": ..., "plaintext": "<JSON string>"}
                v = json.loads(v["plaintext"])
            return v
    pytest.fail("no aggregator CA private key in the stack export", pytrace=False)


def test_ordinary_client_cert_auth_to_kube_apiserver_still_works(sandbox):
    s = sandbox
    s.require("outputs")
    for m in MASTERS:
        node = s.sb.master_api(m, cert="kubelet-client-sandbox-node-1").get("/api/v1/nodes/sandbox-node-1")
        assert node and node["metadata"]["name"] == "sandbox-node-1", m
        assert s.sb.master_api(m).get("/api/v1/namespaces/kube-system")["metadata"]["name"] == "kube-system"


def test_second_preview_has_no_changes(sandbox):
    s = sandbox
    s.require("outputs")
    result, _events, _ = s.stack.preview()
    changes = {op: n for op, n in result.change_summary.items() if op != "same" and n}
    assert not changes, result.stdout[-3000:]


def test_destroy_restores_every_apiserver_and_removes_the_apiservice(sandbox):
    s = sandbox
    s.require("outputs")
    result, _ = s.stack.destroy()
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    for m in MASTERS:
        assert s.env_file(m) == s.original[m], m
        assert not s.cert(m, "aggregator-key.pem").exists()
        assert s.sb.master_api(m).ok(), m
    assert s.sb.api().get(APISERVICE) is None
