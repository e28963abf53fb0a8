"""metricsServer.kubeletCaCertFile and pki.clusterCaCertFile: read at config load, then exactly as if
the key's PEM twin (kubeletCaCertPem, clusterCaCertPem) held the file.

Both keys are read and checked by the same code (components/ca_files.py), worded per key: the shared
cases run for each key (a row of KEYS), the cases that only one key has follow at the end. The policy
pack reads pki.clusterCaCertFile through the same module (the last cases)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components import metrics_server as ms
from components.config import ConfigError, parse
from tests.support.program import run


@dataclass(frozen=True)
class CaKey:
    """One `*CaCertFile` key: where it sits in the config and in Settings, and its own fix words."""

    id: str
    section: str  # config section, e.g. "pki"
    file_key: str  # e.g. "clusterCaCertFile"
    pem_key: str  # the key the file stands in for, e.g. "clusterCaCertPem"
    settings: str  # attribute path in Settings without the _pem/_file suffix, e.g. "pki.cluster_ca_cert"
    what: str  # "create it with <what>, or fix the path"
    private_key_why: str  # "holds a private key (<path>); <why>: point it at ..."

    @property
    def path(self) -> str:
        """The key path the problems start with."""
        return f"metrics-aggregation:{self.section}.{self.file_key}"

    def cfg(self, stack_config, **values):
        """A stack config with these values in the key's section."""
        return stack_config(**{self.section: values})

    def pem_of(self, settings) -> str | None:
        return attrgetter(f"{self.settings}_pem")(settings)

    def file_of(self, settings) -> str | None:
        return attrgetter(f"{self.settings}_file")(settings)


KUBELET = CaKey(
    id="kubelet",
    section="metricsServer",
    file_key="kubeletCaCertFile",
    pem_key="kubeletCaCertPem",
    settings="metrics_server.kubelet_ca_cert",
    what="the PEM CA certificate that signed the kubelets' serving certificates",
    # The file's contents go into a ConfigMap: a CA bundle with its key must not get there.
    private_key_why="the file's contents go into a ConfigMap",
)
CLUSTER = CaKey(
    id="cluster",
    section="pki",
    file_key="clusterCaCertFile",
    pem_key="clusterCaCertPem",
    settings="pki.cluster_ca_cert",
    what="the cluster CA certificate, kube-apiserver's --client-ca-file, e.g. /etc/kubernetes/pki/ca.crt",
    # A copy of the masters' whole pki directory (ca.crt + ca.key concatenated) must not be accepted.
    private_key_why="only the certificate is needed to compare the CAs, and the cluster CA's key must stay "
    "on the masters",
)
per_key = pytest.mark.parametrize("key", [KUBELET, CLUSTER], ids=lambda k: k.id)


def make_ca(cn: str) -> tuple[str, str]:
    """(certificate PEM, private key PEM) of a real self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return make_ca("kubernetes")


def problems_of(cfg, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(cfg, **kw)
    return info.value.problems


def run_file_and_pem(key: CaKey, stack_config, pem: str, tmp_path: Path):
    """(program run with the key's file holding `pem`, program run with the PEM key set to `pem`)."""
    (tmp_path / "ca.pem").write_text(pem)
    from_file = run(key.cfg(stack_config, **{key.file_key: str(tmp_path / "ca.pem")}))
    from_pem = run(key.cfg(stack_config, **{key.pem_key: pem}))
    return from_file, from_pem


# ---- the same for both keys


@per_key
def test_file_behaves_exactly_like_the_pem_key(key, stack_config, ca, tmp_path):
    from_file, from_pem = run_file_and_pem(key, stack_config, ca[0], tmp_path)
    assert key.pem_of(from_file.settings) == ca[0] == key.pem_of(from_pem.settings)
    assert key.file_of(from_file.settings) == str(tmp_path / "ca.pem")


@per_key
def test_relative_path_is_relative_to_the_working_directory(key, stack_config, ca, tmp_path, monkeypatch):
    """`pulumi` runs the program in the project directory: a relative path is read from there."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text(ca[0])
    monkeypatch.chdir(tmp_path)
    result = run(key.cfg(stack_config, **{key.file_key: "certs/ca.pem"}))
    assert key.pem_of(result.settings) == ca[0]


@per_key
def test_parse_reads_through_the_given_reader_and_base_dir(key, stack_config, ca):
    asked: list[Path] = []

    def reader(path: Path) -> bytes:
        asked.append(path)
        return ca[0].encode()

    s = parse(key.cfg(stack_config, **{key.file_key: "certs/ca.pem"}), read_file=reader, base_dir="/srv/project")
    assert asked == [Path("/srv/project/certs/ca.pem")]
    assert key.pem_of(s) == ca[0]
    assert key.file_of(s) == "certs/ca.pem"


@per_key
def test_without_the_key_nothing_is_read(key, stack_config):
    def reader(path: Path) -> bytes:
        raise AssertionError(f"read {path}")

    assert key.pem_of(parse(stack_config(), read_file=reader)) is None


@per_key
def test_missing_file_names_key_path_and_fix(key, stack_config, tmp_path):
    problems = problems_of(key.cfg(stack_config, **{key.file_key: "certs/nope.pem"}), base_dir=tmp_path)
    assert problems == [
        f"{key.path}: 'certs/nope.pem' cannot be read: {tmp_path}/certs/nope.pem (relative to the project "
        f"directory {tmp_path}) does not exist; create it with {key.what}, or fix the path"
    ]


@per_key
def test_missing_file_stops_the_program_before_any_resource(key, stack_config, tmp_path):
    with pytest.raises(ConfigError) as info:
        run(key.cfg(stack_config, **{key.file_key: str(tmp_path / "nope.pem")}))
    assert info.value.registrations == [] or all(r.type == "pulumi:pulumi:Stack" for r in info.value.registrations)
    assert f"{key.path}: '{tmp_path}/nope.pem' cannot be read: {tmp_path}/nope.pem does not exist" in str(info.value)


def _raise(exc: OSError):
    def reader(path: Path) -> bytes:
        raise exc
    return reader


# (case id, the key's value, reader or file contents, words of the message)
BAD = [
    ("unreadable", "/etc/k/ca.pem", _raise(PermissionError(13, "Permission denied")),
     "cannot be read: /etc/k/ca.pem: Permission denied; make it readable by the user running pulumi"),
    ("directory", "/etc/k", _raise(IsADirectoryError(21, "Is a directory")),
     "cannot be read: /etc/k is a directory; point it at the CA certificate file"),
    ("not pem", "/etc/k/ca.pem", b"hello\n", "is not a PEM certificate (/etc/k/ca.pem)"),
    ("broken pem", "/etc/k/ca.pem", b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
     "is not a PEM certificate"),
    ("der", "/etc/k/ca.der", b"\x30\x82\x01\x0a\xff", "openssl x509 -inform der"),
    ("too big", "/etc/k/ca.pem", b"x" * (300 * 1024), "is larger than 256 KiB (/etc/k/ca.pem)"),
    ("empty path", "", b"", "must be the path of a PEM file"),
]


@per_key
@pytest.mark.parametrize("value, source, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file(key, stack_config, value, source, words):
    reader = source if callable(source) else (lambda p: source)
    problems = problems_of(key.cfg(stack_config, **{key.file_key: value}), read_file=reader)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key.path}: {value!r} "), problems
    assert words in problems[0], problems[0]


@per_key
def test_file_with_a_private_key_is_refused(key, stack_config, ca):
    """Neither file may hold a key (see private_key_why): the whole message says why, and no key text."""
    bundle = (ca[0] + ca[1]).encode()
    problems = problems_of(key.cfg(stack_config, **{key.file_key: "/etc/k/ca.pem"}), read_file=lambda p: bundle)
    assert problems == [
        f"{key.path}: '/etc/k/ca.pem' holds a private key (/etc/k/ca.pem); {key.private_key_why}: point it at "
        "the CA certificate only (-----BEGIN CERTIFICATE-----)"
    ]
    assert ca[1].splitlines()[1] not in problems[0]


@per_key
def test_both_keys_are_refused_without_reading_the_file(key, stack_config, ca):
    def reader(path: Path) -> bytes:
        raise AssertionError(f"read although {key.pem_key} is set")

    problems = problems_of(key.cfg(stack_config, **{key.file_key: "ca.pem", key.pem_key: ca[0]}), read_file=reader)
    assert problems == [
        f"{key.path}: 'ca.pem' is set together with {key.pem_key}; choose one: remove {key.pem_key} to read "
        f"the CA from the file, or remove {key.file_key}"
    ]


# ---- metricsServer.kubeletCaCertFile only


def kubelet_objects(result) -> tuple[list[str], dict, dict]:
    """(metrics-server args, kubelet CA ConfigMap inputs, pod annotations) of a program run."""
    dep = result.of_type("kubernetes:apps/v1:Deployment")[0].inputs
    cms = [r.inputs for r in result.of_type("kubernetes:core/v1:ConfigMap")
           if r.inputs["metadata"]["name"] == ms.KUBELET_CA_CONFIGMAP_NAME]
    assert len(cms) == 1, "no kubelet CA ConfigMap"
    tpl = dep["spec"]["template"]
    return tpl["spec"]["containers"][0]["args"], cms[0], tpl["metadata"]["annotations"]


def test_kubelet_file_gives_the_pem_keys_deployment_configmap_and_checksum(stack_config, ca, tmp_path):
    pem = ca[0]
    from_file, from_pem = run_file_and_pem(KUBELET, stack_config, pem, tmp_path)
    args, cm, annotations = kubelet_objects(from_file)
    assert f"--kubelet-certificate-authority={ms.KUBELET_CA_DIR}/{ms.KUBELET_CA_KEY}" in args
    assert "--kubelet-insecure-tls" not in args
    assert cm["data"] == {ms.KUBELET_CA_KEY: pem}
    assert (args, cm) == kubelet_objects(from_pem)[:2]
    assert annotations["checksum/kubelet-ca"] == kubelet_objects(from_pem)[2]["checksum/kubelet-ca"]


def test_kubelet_file_and_insecure_tls_are_refused(stack_config, ca):
    problems = problems_of(stack_config(metricsServer={"kubeletCaCertFile": "ca.pem", "kubeletInsecureTls": True}),
                           read_file=lambda p: ca[0].encode())
    assert problems == [
        "metrics-aggregation:metricsServer.kubeletInsecureTls: True is set together with kubeletCaCertFile; "
        "choose one: remove kubeletInsecureTls to verify kubelets with the CA in kubeletCaCertFile"
    ]


def test_kubelet_file_problems_come_with_the_other_problems(stack_config, tmp_path):
    cfg = stack_config(metricsServer={"kubeletCaCertFile": "nope.pem", "kubeletInsecureTls": True})
    cfg["pki"]["rsaBits"] = 1024
    cfg["masters"][0]["extraFlags"] = {"--v": "a b"}
    problems = problems_of(cfg, base_dir=tmp_path)
    assert [p.split(":", 2)[1] for p in problems] == [
        'masters[0].extraFlags["--v"]', "pki.rsaBits", "metricsServer.kubeletCaCertFile",
        "metricsServer.kubeletInsecureTls",
    ], problems


# ---- pki.clusterCaCertFile only (and both files together)


def test_cluster_file_gives_the_same_resources_as_the_pem_key(stack_config, ca, tmp_path):
    from_file, from_pem = run_file_and_pem(CLUSTER, stack_config, ca[0], tmp_path)
    # The same program: the same resources (the cluster CA is for the policy pack; nothing registers it).
    assert sorted((r.type, r.name) for r in from_file.resources) == sorted((r.type, r.name) for r in from_pem.resources)


def test_both_files_are_read_each_into_its_own_key(stack_config, ca):
    kubelet_ca = make_ca("kubelet-serving-ca")[0]
    files = {Path("/etc/k/ca.crt"): ca[0], Path("/etc/k/kubelet-ca.crt"): kubelet_ca}
    s = parse(stack_config(pki={"clusterCaCertFile": "/etc/k/ca.crt"},
                           metricsServer={"kubeletCaCertFile": "/etc/k/kubelet-ca.crt"}),
              read_file=lambda p: files[p].encode())
    assert (s.pki.cluster_ca_cert_pem, s.metrics_server.kubelet_ca_cert_pem) == (ca[0], kubelet_ca)


def test_both_files_problems_come_with_the_other_problems(stack_config, tmp_path):
    cfg = stack_config(pki={"clusterCaCertFile": "nope.crt", "rsaBits": 1024},
                       metricsServer={"kubeletCaCertFile": "nope.pem"})
    cfg["masters"][0]["extraFlags"] = {"--v": "a b"}
    problems = problems_of(cfg, base_dir=tmp_path)
    assert [p.split(":", 2)[1] for p in problems] == [
        'masters[0].extraFlags["--v"]', "pki.rsaBits", "pki.clusterCaCertFile", "metricsServer.kubeletCaCertFile",
    ], problems
    # each file's fix names what belongs in it
    assert "create it with the cluster CA certificate" in problems[2]
    assert "create it with the PEM CA certificate that signed the kubelets' serving certificates" in problems[3]


# ---- one reader for the stack config and the policy pack


def test_ca_files_needs_neither_pulumi_nor_pydantic():
    """The policy pack imports components.ca_files and components.contract in its own process: they must
    import with the standard library and cryptography alone."""
    import subprocess
    import sys

    code = ("import sys; import components.ca_files, components.contract; "
            "loaded = sorted(m for m in ('pulumi', 'pulumi_policy', 'pydantic') if m in sys.modules); "
            "assert not loaded, loaded")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_policy_pack_has_no_ca_file_reading_of_its_own():
    import ast
    import sys

    from components import ca_files, config

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "policy"))
    import aggregation_policies as ap

    tree = ast.parse((root / "policy" / "aggregation_policies.py").read_text())
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "open" not in calls and not {"read_bytes", "read_text"} & attrs, "the pack reads a file itself"
    assert not hasattr(ap, "MAX_CA_FILE_BYTES")
    # the very module the config reads CA files with
    assert ap.ca_files is ca_files and config.ca_files is ca_files


@pytest.mark.parametrize("case", ["missing", "directory", "not pem", "private key", "too large"])
def test_the_policy_pack_and_the_config_find_the_same_fault(case, stack_config, ca, tmp_path, monkeypatch):
    """The pack's message carries the same words for what is wrong as the config's, ahead of its own hint."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "policy"))
    import aggregation_policies as ap

    path = tmp_path / "ca.crt"
    if case == "directory":
        path.mkdir()
    elif case == "not pem":
        path.write_text("hello\n")
    elif case == "private key":
        path.write_text(ca[0] + ca[1])
    elif case == "too large":
        path.write_text(ca[0] + "#" * (256 * 1024))
    [line] = problems_of(CLUSTER.cfg(stack_config, clusterCaCertFile=str(path)))
    config_says = line.removeprefix(f"{CLUSTER.path}: {str(path)!r} ")
    monkeypatch.setenv("PULUMI_CONFIG", f'{{"metrics-aggregation:pki": {{"clusterCaCertFile": "{path}"}}}}')
    pem, pack_says = ap.cluster_ca(ap.settings_from({}))
    assert pem is None
    what = pack_says.removeprefix(f"{ap.CLUSTER_CA_FILE_KEY} (stack config): {str(path)!r} ").split("; the aggregator CA")[0]
    assert what and config_says.startswith(what), (what, config_says)
