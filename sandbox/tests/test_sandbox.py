"""The sandbox behind `make demo` (sandbox/), without root, namespaces, network or daemons (`make lab`):
Pulumi.sandbox.yaml names what sandbox/cluster.py starts and evaluates under the mocks; the masters'
env-file parsing (lab/supervisor.py), the pod runner's reading of the program's own Deployment
(podrunner.py), the emulated kubelets' metrics (kubelets.py), the sandbox certificates (lab/pki.py) and
the API client (lab/kube.py, against a local TLS server on 127.0.0.1)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import http.client
import http.server
import ipaddress
import json
import socket
import stat
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components import ca_files
from components import metrics_server as ms
from lab import pki as sandbox_pki
from lab.kube import Api, ApiError
from lab.supervisor import BadEnvFile, env_file_args
from sandbox import cluster, kubelets, podrunner
from tests.support.fake_apiserver import Certs, FakeApiServer
from tests.support.program import Run, run

ROOT = Path(__file__).resolve().parents[2]
STACK = yaml.safe_load((ROOT / "Pulumi.sandbox.yaml").read_text())["config"]
VAR = "KUBE_APISERVER_OPTS"
NS = "kube-system"
SB = cluster.Sandbox()  # the defaults `make demo` uses; constructing it starts nothing


def stack_config() -> dict:
    """The `metrics-aggregation:*` keys of Pulumi.sandbox.yaml, unprefixed (a fresh copy)."""
    return {k.partition(":")[2]: copy.deepcopy(v) for k, v in STACK.items() if k.startswith("metrics-aggregation:")}


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sandbox's certificates for its default masters and nodes, made by lab/pki.py."""
    d = tmp_path_factory.mktemp("sandbox") / "pki"
    sandbox_pki.ensure(d, SB.masters, SB.nodes_ip, list(cluster.NODES))
    return d


@pytest.fixture(scope="module")
def sandbox_run(pki_dir: Path) -> tuple[Run, list[Path]]:
    """The program evaluated with Pulumi.sandbox.yaml; the kubelet CA and cluster CA files (which
    `python -m sandbox up` writes under /run) are served from pki_dir through the config's file reader.
    -> (run, paths read)."""
    return evaluate(stack_config(), pki_dir)


def evaluate(cfg: dict, pki_dir: Path) -> tuple[Run, list[Path]]:
    """The program evaluated with `cfg` (stack_config(), changed or not), the CA files served as above."""
    served = {
        Path(cfg["metricsServer"]["kubeletCaCertFile"]): pki_dir / "kubelet-ca.crt",
        Path(cfg["pki"]["clusterCaCertFile"]): pki_dir / "ca.crt",
    }
    asked: list[Path] = []

    def reader(path: Path) -> bytes:
        asked.append(path)
        if path not in served:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return served[path].read_bytes()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ca_files, "read_local_file", reader)  # parse()'s default reader, used by load()
        result = run(cfg)
    return result, asked


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# ---------------------------------------------------------------- 1. Pulumi.sandbox.yaml == cluster.py


def test_stack_file_names_what_cluster_starts():
    cfg = stack_config()
    assert SB.dir == cluster.DEFAULT_DIR
    assert [(m["name"], m["address"]) for m in cfg["masters"]] == list(SB.masters.items())
    assert cfg["ssh"]["agentSocketPath"] == str(SB.agent_socket)
    assert "privateKey" not in cfg["ssh"]
    assert STACK["kubernetes:kubeconfig"] == str(SB.kubeconfig)
    kubelet_ca = cfg["metricsServer"]["kubeletCaCertFile"]
    assert kubelet_ca == str(cluster.DEFAULT_DIR / "pki" / "kubelet-ca.crt")
    assert kubelet_ca == str(sandbox_pki.Pki(SB.pki).path("kubelet-ca"))  # the file pki.ensure writes
    cluster_ca = cfg["pki"]["clusterCaCertFile"]
    assert cluster_ca == str(cluster.DEFAULT_DIR / "pki" / "ca.crt")
    assert cluster_ca == str(sandbox_pki.Pki(SB.pki).path("ca"))
    apiserver = cfg["apiserver"]
    assert apiserver["restartCommand"] == cluster.RESTART_COMMAND
    assert apiserver["configPath"] == cluster.ENV_FILE
    assert apiserver["layout"] == "env-file"
    assert cfg["metricsServer"]["expectNoPods"] is True
    assert cfg["metricsServer"]["waitForAvailable"] is True


def test_cluster_ca_file_is_the_masters_client_ca():
    """pki.clusterCaCertFile is the CA the masters' kube-apiservers take as --client-ca-file (cluster.py
    copies <dir>/pki/ca.crt to that path on every master)."""
    args = env_file_args(SB.env_file_text(cluster.MASTERS[0]), VAR)
    assert "--client-ca-file=/etc/kubernetes/pki/ca.crt" in args
    assert Path(stack_config()["pki"]["clusterCaCertFile"]) == SB.pki / "ca.crt"


def test_stack_file_moves_the_ca_files_with_the_sandbox(tmp_path):
    """The e2e sandboxes take Pulumi.sandbox.yaml with DEFAULT_DIR replaced by their own directory."""
    sb = cluster.Sandbox(dir=tmp_path / "sbx", block=201)
    moved = yaml.safe_load(sb.stack_file_text())["config"]
    assert moved["metrics-aggregation:pki"]["clusterCaCertFile"] == str(sb.pki / "ca.crt")
    assert moved["metrics-aggregation:metricsServer"]["kubeletCaCertFile"] == str(sb.pki / "kubelet-ca.crt")


def test_stack_paths_are_the_masters_private_ones():
    """What the host script writes lands in a master's own mounts, never on the runner's /etc; and the
    readyz URL is the port the env file gives kube-apiserver."""
    apiserver = stack_config()["apiserver"]

    def private(path: str) -> bool:
        return any(path == mp or path.startswith(mp + "/") for mp in cluster.MOUNTS)

    assert private(apiserver["configPath"])
    assert private(apiserver["certDir"])
    assert private(apiserver["restartCommand"].split()[0])
    assert private("/var/lib/metrics-aggregation/scripts")  # components/apiserver.py HOST_SCRIPT_DIR
    url = urlsplit(apiserver["readyzUrl"])
    args = env_file_args(SB.env_file_text(cluster.MASTERS[0]), VAR)
    assert f"--secure-port={url.port}" in args
    assert url.hostname == "127.0.0.1" and "--bind-address=0.0.0.0" in args


def test_sandbox_stack_evaluates_with_the_kubelet_ca(sandbox_run, pki_dir):
    result, asked = sandbox_run
    pem = (pki_dir / "kubelet-ca.crt").read_text()
    assert sorted(asked) == sorted([Path(stack_config()["metricsServer"]["kubeletCaCertFile"]),
                                    Path(stack_config()["pki"]["clusterCaCertFile"])])
    assert result.settings.metrics_server.kubelet_ca_cert_pem == pem
    assert result.settings.pki.cluster_ca_cert_pem == (pki_dir / "ca.crt").read_text()
    assert load_cert(pki_dir / "kubelet-ca.crt").extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    dep = result.of_type("kubernetes:apps/v1:Deployment")
    svc = result.of_type("kubernetes:core/v1:Service")
    api_service = result.of_type("kubernetes:apiregistration.k8s.io/v1:APIService")
    assert len(dep) == len(svc) == len(api_service) == 1
    args = dep[0].inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--kubelet-certificate-authority={ms.KUBELET_CA_DIR}/{ms.KUBELET_CA_KEY}" in args
    assert not any(a.startswith("--kubelet-insecure-tls") for a in args)
    cms = [r.inputs for r in result.of_type("kubernetes:core/v1:ConfigMap")
           if r.inputs["metadata"]["name"] == ms.KUBELET_CA_CONFIGMAP_NAME]
    assert [cm["data"] for cm in cms] == [{ms.KUBELET_CA_KEY: pem}]

    for reg in (dep[0], svc[0]):
        assert reg.inputs["metadata"]["annotations"][ms.SKIP_AWAIT_ANNOTATION] == "true", reg.name
    annotations = api_service[0].inputs["metadata"]["annotations"]
    assert ms.WAIT_FOR_AVAILABLE in json.loads(annotations[ms.WAIT_FOR_ANNOTATION])
    assert ms.SKIP_AWAIT_ANNOTATION not in annotations

    connections = [c["connection"] for c in result.commands]
    assert [c["host"] for c in connections[::2]] == list(SB.masters.values())
    assert {c.get("agentSocketPath") for c in connections} == {str(SB.agent_socket)}
    assert not any(c.get("privateKey") for c in connections)


def test_sandbox_deployment_carries_the_stack_s_extra_args_and_resources(sandbox_run):
    """What `make demo` shows of issue 14: the extraArgs after the program's own flags, in their order,
    and the resources as given (requests and a memory limit; nodeCount, which computes requests, is out)."""
    result, _ = sandbox_run
    cfg = stack_config()["metricsServer"]
    [dep] = result.of_type("kubernetes:apps/v1:Deployment")
    container = dep.inputs["spec"]["template"]["spec"]["containers"][0]
    extra = [f"{flag}={value}" for flag, value in cfg["extraArgs"].items()]
    assert extra == ["--kubelet-request-timeout=5s", "-v=2"]
    assert container["args"][-len(extra):] == extra
    assert not any(a.startswith(("--kubelet-request-timeout", "-v")) for a in container["args"][:-len(extra)])
    assert container["resources"] == cfg["resources"] == {"requests": {"cpu": "100m", "memory": "200Mi"},
                                                          "limits": {"memory": "400Mi"}}
    assert "nodeCount" not in cfg


# ---------------------------------------------------------------- 2. lab/supervisor.env_file_args


def flags_of(text: str) -> list[str]:
    """The flags of an env file written as `VAR="--a \\<newline> --b"`, read without the shell."""
    body = text.split(f'{VAR}="', 1)[1].split('"', 1)[0]
    return [w for line in body.split("\n") for w in line.rstrip("\\").split()]


@pytest.mark.parametrize("master", cluster.MASTERS)
def test_env_file_round_trip(master):
    text = SB.env_file_text(master)
    expected = flags_of(text)
    assert len(expected) > 10 and expected[0] == f"--advertise-address={SB.masters[master]}"
    assert f"--etcd-servers=http://{SB.ctl_ip}:2379" in expected
    assert env_file_args(text, VAR) == expected


@pytest.mark.parametrize("sample", ["kube-apiserver.conf", "kube-apiserver-oneline.conf",
                                    "kube-apiserver-preexisting.conf"])
def test_env_file_samples_of_binary_installs(sample):
    text = (ROOT / "tests" / "hosts" / "samples" / sample).read_text()
    assert env_file_args(text, VAR) == flags_of(text)


def test_env_file_comments_continuations_and_other_variables():
    text = (
        "# kube-apiserver options\n"
        "OTHER=1\n"
        "\n"
        "   # an indented comment with a \"quote\n"
        f'{VAR}="--a=1 \\\n'
        "  --b=two\t\\\n"
        '    --c=/etc/k/x.pem"\n'
        "# KUBE_APISERVER_OPTS=\"--commented-out=1\"\n"
        "LAST='single quoted'\n"
    )
    assert env_file_args(text, VAR) == ["--a=1", "--b=two", "--c=/etc/k/x.pem"]
    assert env_file_args(text, "OTHER") == ["1"]
    assert env_file_args(text, "LAST") == ["single", "quoted"]


@pytest.mark.parametrize("text, words", [
    ("OTHER=1\n# KUBE_APISERVER_OPTS=\"--v=2\"\n", f"does not set {VAR}"),
    (f'{VAR}="--v=2 \\\n  --secure-port=6443\n', "Failed to parse environment file"),
    (f"{VAR}='--v=2\n", "Failed to parse environment file"),
    ("--v=2 --secure-port=6443\n", "invalid environment assignment"),
], ids=["missing variable", "unbalanced double quote", "unbalanced single quote", "not an assignment"])
def test_bad_env_file(text, words):
    with pytest.raises(BadEnvFile, match=words):
        env_file_args(text, VAR)


# ---------------------------------------------------------------- 3. podrunner.desired


def _ints(obj):
    """JSON as the API server returns it: the mocks record whole numbers as floats (10250.0)."""
    return json.loads(json.dumps(obj), parse_float=lambda s: int(float(s)) if float(s).is_integer() else float(s))


PATHS = {
    "kubernetes:apps/v1:Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "kubernetes:core/v1:Secret": "/api/v1/namespaces/{ns}/secrets/{name}",
    "kubernetes:core/v1:ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
    "kubernetes:core/v1:ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
    "kubernetes:core/v1:Service": "/api/v1/namespaces/{ns}/services/{name}",
}


class FakeApi:
    """kube.Api's read side over a table path -> object; apply records what would be written."""

    def __init__(self, objects: dict[str, dict]):
        self.objects = copy.deepcopy(objects)
        self.applied: list[tuple[str, str, dict]] = []

    def get(self, path: str, *, raw: bool = False):
        assert not raw
        return copy.deepcopy(self.objects.get(path))

    def apply(self, path: str, name: str, body: dict) -> dict:
        self.applied.append((path, name, body))
        return body


@pytest.fixture(scope="module")
def objects(sandbox_run) -> dict[str, dict]:
    """What the program creates in the cluster, keyed by API path, as the API server would serve it."""
    return served_objects(sandbox_run[0])


def served_objects(result: Run) -> dict[str, dict]:
    table = {}
    for type_, pattern in PATHS.items():
        for reg in result.of_type(type_):
            obj = _ints(reg.inputs)
            obj["metadata"] = {**obj["metadata"], "uid": f"uid-{reg.name}", "resourceVersion": "1"}
            table[pattern.format(ns=obj["metadata"]["namespace"], name=obj["metadata"]["name"])] = obj
    return table


DEPLOYMENT = PATHS["kubernetes:apps/v1:Deployment"].format(ns=NS, name=podrunner.NAME)
SERVICE_ACCOUNT = PATHS["kubernetes:core/v1:ServiceAccount"].format(ns=NS, name="metrics-server")
SECRET = PATHS["kubernetes:core/v1:Secret"].format(ns=NS, name="metrics-server-serving-cert")
CONFIGMAP = PATHS["kubernetes:core/v1:ConfigMap"].format(ns=NS, name=ms.KUBELET_CA_CONFIGMAP_NAME)


def test_desired_runs_the_programs_deployment(objects, pki_dir, tmp_path):
    assert {DEPLOYMENT, SERVICE_ACCOUNT, SECRET, CONFIGMAP} <= set(objects)
    container = objects[DEPLOYMENT]["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    pod = podrunner.desired(FakeApi(objects), NS, tmp_path)
    assert pod is not None

    vols = tmp_path / "volumes"
    assert len(pod.args) == len(container["args"])
    rewritten = 0
    for original, got in zip(container["args"], pod.args, strict=True):
        flag, eq, value = original.partition("=")
        under = [mp for mp in mounts if eq and (value == mp or value.startswith(mp + "/"))]
        if under:
            rewritten += 1
            assert got == f"{flag}={vols / mounts[under[0]]}{value[len(under[0]):]}", original
        else:
            assert got == original
    assert rewritten >= 4
    for arg in (f"--cert-dir={vols / 'tmp-dir'}", f"--tls-cert-file={vols}/serving-cert/tls.crt",
                f"--tls-private-key-file={vols}/serving-cert/tls.key",
                f"--kubelet-certificate-authority={vols}/kubelet-ca/{ms.KUBELET_CA_KEY}",
                "--kubelet-use-node-status-port", "--secure-port=10250", "--metric-resolution=15s"):
        assert arg in pod.args
    assert not any("/etc/metrics-server" in a for a in pod.args)

    secret = objects[SECRET]["data"]
    assert pod.files == {
        **{f"serving-cert/{k}": base64.b64decode(v) for k, v in secret.items()},
        f"kubelet-ca/{ms.KUBELET_CA_KEY}": (pki_dir / "kubelet-ca.crt").read_bytes(),
    }
    assert {"serving-cert/tls.crt", "serving-cert/tls.key"} <= set(pod.files)
    assert pod.files["serving-cert/tls.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
    assert pod.dirs == ["tmp-dir", "serving-cert", "kubelet-ca"]
    assert (pod.service_account, pod.port, pod.port_name) == ("metrics-server", 10250, "https")


@pytest.mark.parametrize("gone", [SECRET, SERVICE_ACCOUNT, CONFIGMAP])
def test_desired_is_pending_while_what_the_pod_needs_is_missing(objects, tmp_path, gone):
    assert isinstance(podrunner.desired(FakeApi(objects), NS, tmp_path), podrunner.Pod)
    table = {p: o for p, o in objects.items() if p != gone}
    assert podrunner.desired(FakeApi(table), NS, tmp_path) == podrunner.PENDING


def test_desired_is_none_without_a_deployment(objects, tmp_path):
    table = {p: o for p, o in objects.items() if p != DEPLOYMENT}
    assert podrunner.desired(FakeApi(table), NS, tmp_path) is None


def test_desired_is_none_for_a_deployment_being_deleted(objects, tmp_path):
    table = copy.deepcopy(objects)
    table[DEPLOYMENT]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert podrunner.desired(FakeApi(table), NS, tmp_path) is None


def test_the_fingerprint_is_the_pod_template_and_mounted_bytes_are_apart(objects, tmp_path):
    """A rollout follows the pod template (args, its annotations such as the program's checksum); new bytes
    in a mounted Secret or ConfigMap alone change only files_digest (refreshed in place, as the kubelet does)."""
    def pod(table) -> podrunner.Pod:
        p = podrunner.desired(FakeApi(table), NS, tmp_path)
        assert isinstance(p, podrunner.Pod)
        return p

    base = pod(objects)
    assert (pod(objects).fingerprint, pod(objects).files_digest) == (base.fingerprint, base.files_digest)

    same = copy.deepcopy(objects)
    same[DEPLOYMENT]["metadata"].update(resourceVersion="7", generation=3, labels={"x": "y"})
    same[SECRET]["metadata"]["resourceVersion"] = "8"
    same[DEPLOYMENT]["status"] = {"observedGeneration": 3}
    assert (pod(same).fingerprint, pod(same).files_digest) == (base.fingerprint, base.files_digest)

    configmap = copy.deepcopy(objects)
    configmap[CONFIGMAP]["data"][ms.KUBELET_CA_KEY] += "\n"
    for changed in (_with_new_cert(objects), configmap):
        assert pod(changed).fingerprint == base.fingerprint
        assert pod(changed).files_digest != base.files_digest

    arg = copy.deepcopy(objects)
    args = arg[DEPLOYMENT]["spec"]["template"]["spec"]["containers"][0]["args"]
    i = args.index("--metric-resolution=15s")
    args[i] = "--metric-resolution=20s"
    assert pod(arg).fingerprint != base.fingerprint

    assert pod(_with_new_template_checksum(objects)).fingerprint != base.fingerprint

    # any other change of the pod template is a rollout too, as a new ReplicaSet is (e.g. new limits)
    limits = copy.deepcopy(objects)
    limits[DEPLOYMENT]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {"memory": "300Mi"}
    assert pod(limits).fingerprint != base.fingerprint


def _template(table: dict) -> dict:
    return table[DEPLOYMENT]["spec"]["template"]


def _container(table: dict) -> dict:
    return _template(table)["spec"]["containers"][0]


# what metricsServer.extraArgs renders after the program's own args (`--flag=value`, or the flag alone), and
# a value under a mountPath (the pod's /tmp): the podrunner must not reorder, drop or merge any of them
EXTRA_ARGS = ["--kubelet-request-timeout=5s", "-v=2", "--profiling", "--audit-log-path=/tmp/audit.log"]


def test_desired_passes_the_container_args_as_given(objects, tmp_path):
    table = copy.deepcopy(objects)
    _container(table)["args"] += EXTRA_ARGS
    pod = podrunner.desired(FakeApi(table), NS, tmp_path)
    assert isinstance(pod, podrunner.Pod)
    program_args = podrunner.desired(FakeApi(objects), NS, tmp_path).args
    assert pod.args == [*program_args, *EXTRA_ARGS[:3], f"--audit-log-path={tmp_path / 'volumes' / 'tmp-dir'}/audit.log"]


class TokenApi(FakeApi):
    """FakeApi plus the TokenRequest that Runner.start makes for the pod's ServiceAccount."""

    ca = Path("/nonexistent/ca.crt")

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        assert (method, path) == ("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/metrics-server/token")
        return {"status": {"token": "t0ken"}}


def test_start_runs_the_args_then_what_the_pod_gets_from_its_environment(objects, tmp_path, monkeypatch, capsys):
    """The process's argv: the container's args in their order, then the pod address and the kubeconfigs
    (last, so they win over the same flags among the args: pflag keeps the last value)."""
    table = copy.deepcopy(objects)
    _container(table)["args"] += EXTRA_ARGS
    _container(table)["resources"]["limits"] = {"memory": "300Mi"}
    _template(table)["spec"]["tolerations"] = [{"key": "node-role.kubernetes.io/control-plane",
                                                "operator": "Exists", "effect": "NoSchedule"}]
    started: list[list[str]] = []

    class Proc:
        pid = 4242

        def __init__(self, argv, **kw):
            started.append(argv)

    monkeypatch.setattr(podrunner.subprocess, "Popen", Proc)
    api = TokenApi(table)
    runner = podrunner.Runner(api, NS, tmp_path, "198.18.200.20", "/opt/bin/metrics-server", ["https://x:6443"])
    try:
        pod = podrunner.desired(api, NS, tmp_path)
        runner.start(pod)
    finally:
        runner.log.close()
    kubeconfig = tmp_path / "kubeconfig"
    assert started == [["/opt/bin/metrics-server", *pod.args, "--bind-address=198.18.200.20",
                        f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                        f"--authorization-kubeconfig={kubeconfig}"]]
    assert pod.args[-4:-1] == EXTRA_ARGS[:3]
    assert json.loads(kubeconfig.read_text())["users"][0]["user"]["token"] == "t0ken"
    out = capsys.readouterr().out
    ignored = out.split("not applied in the sandbox (podrunner.IGNORED says why): ", 1)[1].splitlines()[0]
    assert 'container.resources={"limits":{"memory":"300Mi"},"requests":' in ignored
    assert 'spec.tolerations=[{"effect":"NoSchedule","key":"node-role.kubernetes.io/control-plane"' in ignored
    assert "spec.nodeSelector=" in ignored and "container.image=" in ignored
    assert "container.args" not in ignored and "spec.hostNetwork" not in ignored  # applied; false


def test_every_field_of_the_programs_pod_template_is_applied_or_ignored(objects):
    """A field the program's Deployment sets that the podrunner neither applies nor knows to leave alone
    would pass unnoticed: each is in podrunner.APPLIED or podrunner.IGNORED (with the reason)."""
    assert not set(podrunner.APPLIED) & set(podrunner.IGNORED)
    fields = set(podrunner.template_fields(_template(objects)))
    assert {"container.args", "container.resources", "spec.nodeSelector", "spec.priorityClassName"} <= fields
    assert fields <= set(podrunner.APPLIED) | set(podrunner.IGNORED), fields - set(podrunner.APPLIED) - set(podrunner.IGNORED)


def test_host_network_runs_at_the_pods_address_on_the_container_port(pki_dir, tmp_path):
    """metricsServer.hostNetwork with containerPort 4443 (10250 is the node's kubelet there): the process
    gets the program's --secure-port=4443 and the EndpointSlice that port, at the pods namespace's address
    (the node's, for a pod on the node's network)."""
    cfg = stack_config()
    cfg["metricsServer"].update(hostNetwork=True, containerPort=4443)
    table = served_objects(evaluate(cfg, pki_dir)[0])
    assert _template(table)["spec"]["hostNetwork"] is True
    api = FakeApi(table)
    pod = podrunner.desired(api, NS, tmp_path)
    assert isinstance(pod, podrunner.Pod)
    assert (pod.port, pod.port_name) == (4443, "https") and "--secure-port=4443" in pod.args
    assert podrunner.unapplied(_template(table))["spec.hostNetwork"] is True
    _, _, body = _slice_written(api, pod, tmp_path)
    assert body["ports"] == [{"name": "https", "port": 4443, "protocol": "TCP"}]
    assert body["endpoints"][0]["addresses"] == ["198.18.200.20"]


def test_scheduling_image_and_limits_fields_are_left_alone_by_name(objects):
    """What issue 14's settings add to the pod template, as a manifest writes it: each is named as left
    alone (no scheduler, no image pull, no cgroup), and the pod still runs."""
    table = copy.deepcopy(objects)
    spec = _template(table)["spec"]
    added = {
        "spec.tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        "spec.affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "node-role.kubernetes.io/infra", "operator": "Exists"}]}]}}},
        "spec.topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                            "whenUnsatisfiable": "ScheduleAnyway"}],
        "spec.imagePullSecrets": [{"name": "regcred"}],
        "spec.hostNetwork": True,
    }
    for path, value in added.items():
        spec[path.split(".", 1)[1]] = value
    left = podrunner.unapplied(_template(table))
    assert {k: left[k] for k in added} == added
    assert not set(left) & set(podrunner.APPLIED)
    assert isinstance(podrunner.desired(FakeApi(table), NS, Path("/nonexistent")), podrunner.Pod)


def _slice_written(api: FakeApi, pod: podrunner.Pod, tmp_path: Path) -> tuple[str, str, dict]:
    """(path, name, body) of the one EndpointSlice a runner at 198.18.200.20 writes for `pod` (no process)."""
    runner = podrunner.Runner(api, NS, tmp_path, "198.18.200.20", "/nonexistent/metrics-server", ["https://x:6443"])
    try:
        runner.sync_slice(pod)
    finally:
        runner.log.close()
    [written] = api.applied
    return written


def test_endpoint_slice_for_the_programs_service(objects, tmp_path):
    """The Service's targetPort (a port name) resolves to the container's port; not ready while no
    process runs."""
    api = FakeApi(objects)
    path, name, body = _slice_written(api, podrunner.desired(api, NS, tmp_path), tmp_path)
    assert (path, name) == (f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", podrunner.SLICE_NAME)
    assert body["metadata"]["labels"]["kubernetes.io/service-name"] == podrunner.NAME
    svc = objects[PATHS["kubernetes:core/v1:Service"].format(ns=NS, name=podrunner.NAME)]
    assert body["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert body["ports"] == [{"name": "https", "port": 10250, "protocol": "TCP"}]
    assert body["endpoints"] == [{"addresses": ["198.18.200.20"], "conditions": {"ready": False}}]


@pytest.mark.parametrize(("strategy", "replicas", "expected"), [
    ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}, 1, 0),  # the program's one replica
    ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}, 2, 1),  # the program's HA
    ({}, 1, 0),  # the default 25% rounds down
    ({}, 4, 1),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}, 3, 1),
    ({"type": "Recreate"}, 2, 2),
])
def test_max_unavailable_as_the_deployment_controller_counts_it(strategy, replicas, expected):
    assert podrunner.max_unavailable({"spec": {"replicas": replicas, "strategy": strategy}}) == expected


class FakeProc:
    pids = iter(range(1000, 2000))

    def __init__(self, log: list[str], address: str):
        self.pid, self.log, self.address, self.returncode = next(self.pids), log, address, None

    def poll(self):
        return self.returncode

    def terminate(self) -> None:
        self.log.append(f"stop {self.address}")
        self.returncode = -15

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def _rolling_runner(objects, tmp_path, monkeypatch, readiness: list[bool]):
    """A Runner whose processes are FakeProcs: `log` records starts, stops and each EndpointSlice written."""
    api = FakeApi(objects)
    log: list[str] = []
    runner = podrunner.Runner(api, NS, tmp_path, "198.18.200.20", "/nonexistent/metrics-server", ["https://x:6443"],
                              surge_address="198.18.200.21")

    def start(pod, address=None, *, ready=True):
        address = address or runner.address
        log.append(f"start {address}")
        r = podrunner.Running(pod, address, FakeProc(log, address), ready)
        return r

    answers = iter(readiness)
    monkeypatch.setattr(runner, "start", start)
    monkeypatch.setattr(runner, "passes_readiness", lambda r: next(answers))
    monkeypatch.setattr(podrunner, "DRAIN_SECONDS", 0.0)
    monkeypatch.setattr(podrunner.time, "sleep", lambda s: None)
    real_apply, real_get, written = api.apply, api.get, {}

    def apply(path, name, body):
        log.append("slice " + ",".join(f"{e['addresses'][0]}={e['conditions']['ready']}" for e in body["endpoints"]))
        written[f"{path}/{name}"] = copy.deepcopy(body)
        return real_apply(path, name, body)

    monkeypatch.setattr(api, "apply", apply)
    monkeypatch.setattr(api, "get", lambda path, **kw: copy.deepcopy(written[path]) if path in written else real_get(path, **kw))
    return api, runner, log


def _with_new_template_checksum(objects):
    """What the program changes with a new serving cert: the pod template's checksum annotation."""
    changed = copy.deepcopy(objects)
    meta = changed[DEPLOYMENT]["spec"]["template"].setdefault("metadata", {})
    meta.setdefault("annotations", {})["checksum/serving-cert"] = "0" * 64
    return changed


def _with_new_cert(objects):
    changed = copy.deepcopy(objects)
    data = bytearray(base64.b64decode(changed[SECRET]["data"]["tls.crt"]))
    data[40] ^= 0x01
    changed[SECRET]["data"]["tls.crt"] = base64.b64encode(bytes(data)).decode()
    return changed


def test_a_new_pod_is_ready_before_the_old_one_leaves(objects, tmp_path, monkeypatch):
    """maxUnavailable 0 (one replica): the new process starts at the surge address, the old one leaves the
    endpoints once the new one passes its readinessProbe, and only then stops: always one ready endpoint."""
    api, runner, log = _rolling_runner(objects, tmp_path, monkeypatch, readiness=[False, False, True])
    try:
        pod = podrunner.desired(api, NS, tmp_path)
        assert pod is not None and pod.surge and pod.ready_path == "/readyz"
        runner.tick()
        api.objects = _with_new_template_checksum(_with_new_cert(objects))
        runner.tick()
    finally:
        runner.log.close()
    assert log == [
        "start 198.18.200.20", "slice 198.18.200.20=True",
        "start 198.18.200.21", "slice 198.18.200.20=True,198.18.200.21=False",
        "slice 198.18.200.21=True", "stop 198.18.200.20",
    ]
    assert runner.current.address == "198.18.200.21" and runner.starting is None


def test_new_secret_bytes_alone_are_written_under_the_running_process(objects, tmp_path, monkeypatch):
    """Same pod template, new serving cert in the Secret: the running process's file changes (by rename),
    nothing stops or starts, the endpoints stay (a kubelet refreshing a Secret volume)."""
    api, runner, log = _rolling_runner(objects, tmp_path, monkeypatch, readiness=[])
    try:
        runner.tick()
        changed = _with_new_cert(objects)
        api.objects = changed
        runner.tick()
    finally:
        runner.log.close()
    assert log == ["start 198.18.200.20", "slice 198.18.200.20=True"]
    crt = tmp_path / "volumes" / "serving-cert" / "tls.crt"
    assert crt.read_bytes() == base64.b64decode(changed[SECRET]["data"]["tls.crt"])
    assert runner.current.files_digest == podrunner.desired(api, NS, tmp_path).files_digest


def test_a_secret_replaced_under_a_running_pod_leaves_it_running(objects, tmp_path, monkeypatch):
    """pulumi-kubernetes replaces a Secret whose data changed by delete, then create: meanwhile the running
    process keeps serving (a kubelet does not kill a pod whose Secret went away)."""
    api, runner, log = _rolling_runner(objects, tmp_path, monkeypatch, readiness=[])
    try:
        runner.tick()
        api.objects = {p: o for p, o in objects.items() if p != SECRET}
        runner.tick()
        assert runner.current is not None and runner.current.alive()
    finally:
        runner.log.close()
    assert log == ["start 198.18.200.20", "slice 198.18.200.20=True"]


def test_a_new_pod_that_never_gets_ready_leaves_the_old_one_serving(objects, tmp_path, monkeypatch):
    api, runner, log = _rolling_runner(objects, tmp_path, monkeypatch, readiness=[])
    monkeypatch.setattr(podrunner, "READY_TIMEOUT", -1.0)
    monkeypatch.setattr(runner, "passes_readiness", lambda r: False)
    try:
        runner.tick()
        api.objects = _with_new_template_checksum(_with_new_cert(objects))
        runner.roll(podrunner.desired(api, NS, tmp_path))
    finally:
        runner.log.close()
    assert log[-3:] == ["slice 198.18.200.20=True,198.18.200.21=False", "stop 198.18.200.21", "slice 198.18.200.20=True"]
    assert runner.current.address == "198.18.200.20"


def test_without_a_surge_the_old_pod_stops_first(objects, tmp_path, monkeypatch):
    # maxUnavailable 1 (the program's HA Deployment, where a PodDisruptionBudget and a second replica serve)
    table = copy.deepcopy(objects)
    table[DEPLOYMENT]["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    api, runner, log = _rolling_runner(table, tmp_path, monkeypatch, readiness=[])
    try:
        runner.tick()
        api.objects = _with_new_template_checksum(_with_new_cert(table))
        runner.tick()
    finally:
        runner.log.close()
    assert log == ["start 198.18.200.20", "slice 198.18.200.20=True", "stop 198.18.200.20", "start 198.18.200.20"]


# ---------------------------------------------------------------- 4. kubelets


def parse_prometheus(text: str) -> tuple[dict[str, tuple[float, int | None]], dict[str, str]]:
    """(name -> (value, timestamp ms or None), name -> TYPE) of an unlabelled Prometheus text exposition."""
    samples: dict[str, tuple[float, int | None]] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            parts = line.split()
            assert len(parts) in (2, 3), line
            samples[parts[0]] = (float(parts[1]), int(parts[2]) if len(parts) == 3 else None)
    return samples, types


@pytest.mark.parametrize("index", [0, 1, 2])
def test_metrics_text(index):
    t1 = kubelets.STARTED + 123.456
    dt_s = 37.5
    m1, types = parse_prometheus(kubelets.metrics_text(index, t1))
    m2, _ = parse_prometheus(kubelets.metrics_text(index, t1 + dt_s))
    assert types == {"node_cpu_usage_seconds_total": "counter", "node_memory_working_set_bytes": "gauge",
                     "container_cpu_usage_seconds_total": "counter", "container_memory_working_set_bytes": "gauge",
                     "container_start_time_seconds": "gauge", "resource_scrape_error": "gauge"}
    # one container, so that metrics-server's storage (and its /readyz) gets pod metrics too
    pod = f'{{container="kube-proxy",namespace="kube-system",pod="kube-proxy-{index}"}}'
    c1, c2 = m1[f"container_cpu_usage_seconds_total{pod}"], m2[f"container_cpu_usage_seconds_total{pod}"]
    assert c2[0] - c1[0] == pytest.approx(0.01 * dt_s, abs=1e-5)
    assert (c1[1], c2[1]) == (int(t1 * 1000), int((t1 + dt_s) * 1000))
    assert m1[f"container_memory_working_set_bytes{pod}"] == (32 * 1024 * 1024, c1[1])
    assert m1[f"container_start_time_seconds{pod}"][0] < t1
    cpu1, ts1 = m1["node_cpu_usage_seconds_total"]
    cpu2, ts2 = m2["node_cpu_usage_seconds_total"]
    assert cpu1 > 0
    assert cpu2 - cpu1 == pytest.approx((index + 1) * 0.25 * dt_s, abs=1e-5)
    assert ts1 == int(t1 * 1000) and ts2 == int((t1 + dt_s) * 1000) and ts2 > ts1
    for m, ts in ((m1, ts1), (m2, ts2)):
        assert m["node_memory_working_set_bytes"] == ((index + 1) * 512 * 1024 * 1024, ts)
        assert m["resource_scrape_error"] == (0, None)


@pytest.mark.parametrize("index", [0, 2])
def test_node_status(index):
    st = kubelets.node_status(f"sandbox-node-{index + 1}", index, SB.nodes_ip)
    assert {"type": "InternalIP", "address": SB.nodes_ip} in st["addresses"]
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250 + index
    ready = [c for c in st["conditions"] if c["type"] == "Ready"]
    assert len(ready) == 1 and ready[0]["status"] == "True"
    beat = dt.datetime.strptime(ready[0]["lastHeartbeatTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - beat).total_seconds()) < 60


@pytest.mark.timeout(30)
def test_kubelet_handler_needs_a_bearer_token():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), kubelets.handler_for(1))
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        conn_args = ("127.0.0.1", srv.server_address[1])

        def get(path: str, headers: dict) -> tuple[int, str]:
            c = http.client.HTTPConnection(*conn_args, timeout=5)
            try:
                c.request("GET", path, headers=headers)
                r = c.getresponse()
                return r.status, r.read().decode()
            finally:
                c.close()

        assert get("/metrics/resource", {})[0] == 401
        status, body = get("/metrics/resource?x=1", {"Authorization": "Bearer t"})
        assert status == 200
        assert parse_prometheus(body)[0]["node_memory_working_set_bytes"][0] == 2 * 512 * 1024 * 1024
        assert get("/nope", {"Authorization": "Bearer t"})[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


# ---------------------------------------------------------------- 5. pki


def signature_ok(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                   ec.ECDSA(cert.signature_hash_algorithm))
    except InvalidSignature:
        return False
    return True


def eku(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_pki_cas(pki_dir):
    for stem in ("ca", "kubelet-ca"):
        ca = load_cert(pki_dir / f"{stem}.crt")
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca, stem
        assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign, stem
        assert ca.subject == ca.issuer and signature_ok(ca, ca), stem
    assert load_cert(pki_dir / "ca.crt").public_key() != load_cert(pki_dir / "kubelet-ca.crt").public_key()


def test_pki_apiserver_and_admin_certs(pki_dir):
    ca = load_cert(pki_dir / "ca.crt")
    for name, address in SB.masters.items():
        cert = load_cert(pki_dir / f"apiserver-{name}.crt")
        assert signature_ok(cert, ca) and cert.issuer == ca.subject
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert ExtendedKeyUsageOID.SERVER_AUTH in eku(cert)
        ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.IPAddress)
        assert {ipaddress.ip_address(address), ipaddress.ip_address("127.0.0.1")} <= set(ips), name
        others = set(SB.masters.values()) - {address}
        assert not {ipaddress.ip_address(a) for a in others} & set(ips), name
    admin = load_cert(pki_dir / "admin.crt")
    assert signature_ok(admin, ca)
    assert eku(admin) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]


def test_pki_kubelet_certs_are_signed_by_the_kubelet_ca_only(pki_dir):
    ca, kubelet_ca = load_cert(pki_dir / "ca.crt"), load_cert(pki_dir / "kubelet-ca.crt")
    for node in cluster.NODES:
        cert = load_cert(pki_dir / f"kubelet-{node}.crt")
        assert signature_ok(cert, kubelet_ca), node
        cert.verify_directly_issued_by(kubelet_ca)
        assert not signature_ok(cert, ca), node
        assert cert.issuer != ca.subject
        assert ExtendedKeyUsageOID.SERVER_AUTH in eku(cert)
        ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.IPAddress)
        assert ips == [ipaddress.ip_address(SB.nodes_ip)]


def test_pki_keys_are_private_and_match_their_certs(pki_dir):
    keys = sorted(pki_dir.glob("*.key"))
    assert len(keys) >= 2 + 3 + len(SB.masters) + len(cluster.NODES) + 1
    assert stat.S_IMODE(pki_dir.stat().st_mode) == 0o700
    for key_file in keys:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file.name
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        crt = key_file.with_suffix(".crt")
        if crt.exists():
            assert load_cert(crt).public_key() == key.public_key(), key_file.name


def test_pki_ensure_twice_rewrites_nothing(tmp_path):
    d = tmp_path / "pki"
    first = sandbox_pki.ensure(d, SB.masters, SB.nodes_ip, list(cluster.NODES))
    assert {"ca", "kubelet-ca", "sa", "admin", "apiserver-master1", "kubelet-sandbox-node-3"} <= set(first.written)
    before = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in d.iterdir()}
    second = sandbox_pki.ensure(d, SB.masters, SB.nodes_ip, list(cluster.NODES))
    assert second.written == []
    assert {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in d.iterdir()} == before


# ---------------------------------------------------------------- 6. kube.Api


ROUTES = {
    "/api/v1/namespaces/kube-system": {"kind": "Namespace", "metadata": {"name": NS}},
    "/readyz": "ok",
    "/forbidden": (403, {"kind": "Status", "status": "Failure", "reason": "Forbidden",
                         "message": 'nodes is forbidden: User "x" cannot list', "code": 403}),
    ("POST", "/conflict"): (409, {"kind": "Status", "message": "the object has been modified", "code": 409}),
    "/broken": (500, "etcd: request timed out (not JSON)"),
}


@pytest.fixture
def apiserver(pki_dir):
    """A TLS server on 127.0.0.1 with master1's serving cert that requires a client cert from the sandbox CA."""
    certs = Certs(pki_dir, ca=pki_dir / "ca.crt", server_cert=pki_dir / "apiserver-master1.crt",
                  server_key=pki_dir / "apiserver-master1.key", client_cert=pki_dir / "admin.crt",
                  client_key=pki_dir / "admin.key", other_ca=pki_dir / "kubelet-ca.crt")
    with FakeApiServer(certs, ROUTES, require_client_cert=True) as srv:
        yield srv, srv.url


@pytest.fixture
def refused_url():
    """A port on 127.0.0.1 that refuses connections: bound (so nothing else takes it) but not listening."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield f"https://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


def client(pki_dir: Path, *servers: str) -> Api:
    return Api(servers, ca=pki_dir / "ca.crt", cert=pki_dir / "admin.crt", key=pki_dir / "admin.key", timeout=3)


@pytest.mark.timeout(30)
def test_api_get_and_404(apiserver, pki_dir):
    srv, url = apiserver
    api = client(pki_dir, url)
    assert api.get("/api/v1/namespaces/kube-system") == {"kind": "Namespace", "metadata": {"name": NS}}
    assert api.get("/api/v1/namespaces/nope") is None
    assert api.delete("/api/v1/namespaces/nope") is False
    assert api.ok()
    cn = [client_cn for _, _, client_cn in srv.requests]
    assert cn and set(cn) == {"sandbox-admin"}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method, path, status, message", [
    ("GET", "/forbidden", 403, 'nodes is forbidden: User "x" cannot list'),
    ("POST", "/conflict", 409, "the object has been modified"),
    ("GET", "/broken", 500, "etcd: request timed out (not JSON)"),
    ("POST", "/nope", 404, "/nope not found"),
])
def test_api_errors(apiserver, pki_dir, method, path, status, message):
    _, url = apiserver
    with pytest.raises(ApiError) as info:
        client(pki_dir, url).request(method, path, {"kind": "X"} if method == "POST" else None)
    assert info.value.status == status
    assert str(info.value) == f"HTTP {status}: {message}"


@pytest.mark.timeout(30)
def test_api_falls_through_a_refusing_server(apiserver, pki_dir, refused_url):
    _, url = apiserver
    assert client(pki_dir, refused_url, url).get("/api/v1/namespaces/kube-system")["metadata"]["name"] == NS
    with pytest.raises(OSError):
        client(pki_dir, refused_url).get("/api/v1/namespaces/kube-system")
    assert not client(pki_dir, refused_url).ok()
