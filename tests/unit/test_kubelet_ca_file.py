"""metricsServer.kubeletCaCertFile: read at config load, then exactly as if kubeletCaCertPem held the file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components import metrics_server as ms
from components.config import ConfigError, parse
from tests.support.program import run


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    """(certificate PEM, private key PEM) of a real self-signed kubelet serving CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelet-serving-ca")])
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


def kubelet_objects(result) -> tuple[list[str], dict, dict]:
    """(metrics-server args, kubelet CA ConfigMap inputs, pod annotations) of a program run."""
    dep = result.of_type("kubernetes:apps/v1:Deployment")[0].inputs
    cms = [r.inputs for r in result.of_type("kubernetes:core/v1:ConfigMap")
           if r.inputs["metadata"]["name"] == ms.KUBELET_CA_CONFIGMAP_NAME]
    assert len(cms) == 1, "no kubelet CA ConfigMap"
    tpl = dep["spec"]["template"]
    return tpl["spec"]["containers"][0]["args"], cms[0], tpl["metadata"]["annotations"]


def test_file_behaves_exactly_like_the_pem_key(stack_config, ca, tmp_path):
    pem = ca[0]
    (tmp_path / "kubelet-ca.pem").write_text(pem)
    from_file = run(stack_config(metricsServer={"kubeletCaCertFile": str(tmp_path / "kubelet-ca.pem")}))
    from_pem = run(stack_config(metricsServer={"kubeletCaCertPem": pem}))
    assert from_file.settings.metrics_server.kubelet_ca_cert_pem == pem
    args, cm, annotations = kubelet_objects(from_file)
    assert f"--kubelet-certificate-authority={ms.KUBELET_CA_DIR}/{ms.KUBELET_CA_KEY}" in args
    assert "--kubelet-insecure-tls" not in args
    assert cm["data"] == {ms.KUBELET_CA_KEY: pem}
    assert (args, cm) == kubelet_objects(from_pem)[:2]
    assert annotations["checksum/kubelet-ca"] == kubelet_objects(from_pem)[2]["checksum/kubelet-ca"]


def test_relative_path_is_relative_to_the_working_directory(stack_config, ca, tmp_path, monkeypatch):
    """`pulumi` runs the program in the project directory: a relative path is read from there."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "kubelet-ca.pem").write_text(ca[0])
    monkeypatch.chdir(tmp_path)
    result = run(stack_config(metricsServer={"kubeletCaCertFile": "certs/kubelet-ca.pem"}))
    assert result.settings.metrics_server.kubelet_ca_cert_pem == ca[0]


def test_parse_reads_through_the_given_reader_and_base_dir(stack_config, ca):
    asked: list[Path] = []

    def reader(path: Path) -> bytes:
        asked.append(path)
        return ca[0].encode()

    s = parse(stack_config(metricsServer={"kubeletCaCertFile": "certs/ca.pem"}), read_file=reader,
              base_dir="/srv/project")
    assert asked == [Path("/srv/project/certs/ca.pem")]
    assert s.metrics_server.kubelet_ca_cert_pem == ca[0]
    assert s.metrics_server.kubelet_ca_cert_file == "certs/ca.pem"


def test_without_the_key_nothing_is_read(stack_config):
    def reader(path: Path) -> bytes:
        raise AssertionError(f"read {path}")

    assert parse(stack_config(), read_file=reader).metrics_server.kubelet_ca_cert_pem is None


def _raise(exc: OSError):
    def reader(path: Path) -> bytes:
        raise exc
    return reader


def problems_of(cfg, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(cfg, **kw)
    return info.value.problems


def test_missing_file_names_key_path_and_fix(stack_config, tmp_path):
    problems = problems_of(stack_config(metricsServer={"kubeletCaCertFile": "certs/nope.pem"}), base_dir=tmp_path)
    assert problems == [
        f"metrics-aggregation:metricsServer.kubeletCaCertFile: 'certs/nope.pem' cannot be read: "
        f"{tmp_path}/certs/nope.pem (relative to the project directory {tmp_path}) does not exist; create it "
        "with the PEM CA certificate that signed the kubelets' serving certificates, or fix the path"
    ]


def test_missing_file_stops_the_program_before_any_resource(stack_config, tmp_path):
    with pytest.raises(ConfigError) as info:
        run(stack_config(metricsServer={"kubeletCaCertFile": str(tmp_path / "nope.pem")}))
    assert info.value.registrations == [] or all(r.type == "pulumi:pulumi:Stack" for r in info.value.registrations)
    assert f"{tmp_path}/nope.pem does not exist" in str(info.value)


# (case id, config of metricsServer, reader or file contents, expected key path, words of the message)
BAD = [
    ("unreadable", {"kubeletCaCertFile": "/etc/k/ca.pem"}, _raise(PermissionError(13, "Permission denied")),
     "metricsServer.kubeletCaCertFile", "/etc/k/ca.pem: Permission denied; make it readable"),
    ("directory", {"kubeletCaCertFile": "/etc/k"}, _raise(IsADirectoryError(21, "Is a directory")),
     "metricsServer.kubeletCaCertFile", "is a directory"),
    ("not pem", {"kubeletCaCertFile": "/etc/k/ca.pem"}, b"hello\n",
     "metricsServer.kubeletCaCertFile", "is not a PEM certificate (/etc/k/ca.pem)"),
    ("broken pem", {"kubeletCaCertFile": "/etc/k/ca.pem"},
     b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
     "metricsServer.kubeletCaCertFile", "is not a PEM certificate"),
    ("der", {"kubeletCaCertFile": "/etc/k/ca.der"}, b"\x30\x82\x01\x0a\xff", "metricsServer.kubeletCaCertFile",
     "openssl x509 -inform der"),
    ("too big", {"kubeletCaCertFile": "/etc/k/ca.pem"}, b"x" * (300 * 1024), "metricsServer.kubeletCaCertFile",
     "larger than 256 KiB"),
    ("empty path", {"kubeletCaCertFile": ""}, b"", "metricsServer.kubeletCaCertFile", "must be the path"),
]


@pytest.mark.parametrize("ms_cfg, source, path, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file(stack_config, ms_cfg, source, path, words):
    reader = source if callable(source) else (lambda p: source)
    problems = problems_of(stack_config(metricsServer=ms_cfg), read_file=reader)
    line = next((p for p in problems if p.startswith(f"metrics-aggregation:{path}: ")), None)
    assert line is not None, problems
    assert words in line, line
    assert f"{ms_cfg['kubeletCaCertFile']!r}" in line


def test_file_with_a_private_key_is_refused(stack_config, ca):
    """The file's contents go into a ConfigMap: a CA bundle with its key must not get there."""
    bundle = (ca[0] + ca[1]).encode()
    problems = problems_of(stack_config(metricsServer={"kubeletCaCertFile": "/etc/k/ca.pem"}),
                           read_file=lambda p: bundle)
    assert len(problems) == 1 and "holds a private key" in problems[0], problems
    assert ca[1].splitlines()[1] not in problems[0]


def test_both_keys_are_refused_without_reading_the_file(stack_config, ca):
    def reader(path: Path) -> bytes:
        raise AssertionError("read although kubeletCaCertPem is set")

    problems = problems_of(stack_config(metricsServer={"kubeletCaCertFile": "ca.pem", "kubeletCaCertPem": ca[0]}),
                           read_file=reader)
    assert problems == [
        "metrics-aggregation:metricsServer.kubeletCaCertFile: 'ca.pem' is set together with kubeletCaCertPem; "
        "choose one: remove kubeletCaCertPem to read the CA from the file, or remove kubeletCaCertFile"
    ]


def test_file_and_insecure_tls_are_refused(stack_config, ca):
    problems = problems_of(stack_config(metricsServer={"kubeletCaCertFile": "ca.pem", "kubeletInsecureTls": True}),
                           read_file=lambda p: ca[0].encode())
    assert problems == [
        "metrics-aggregation:metricsServer.kubeletInsecureTls: True is set together with kubeletCaCertFile; "
        "choose one: remove kubeletInsecureTls to verify kubelets with the CA in kubeletCaCertFile"
    ]


def test_file_problems_come_with_the_other_problems(stack_config, tmp_path):
    cfg = stack_config(metricsServer={"kubeletCaCertFile": "nope.pem", "kubeletInsecureTls": True})
    cfg["pki"]["rsaBits"] = 1024
    cfg["masters"][0]["extraFlags"] = {"--v": "a b"}
    problems = problems_of(cfg, base_dir=tmp_path)
    assert [p.split(":", 2)[1] for p in problems] == [
        'masters[0].extraFlags["--v"]', "pki.rsaBits", "metricsServer.kubeletCaCertFile",
        "metricsServer.kubeletInsecureTls",
    ], problems
