"""pki.clusterCaCertFile: read at config load, then exactly as if pki.clusterCaCertPem held the file
(the same reading and the same checks as metricsServer.kubeletCaCertFile, worded for the cluster CA)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.config import ConfigError, parse
from tests.support.program import run

KEY = "metrics-aggregation:pki.clusterCaCertFile"


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


def test_file_behaves_exactly_like_the_pem_key(stack_config, ca, tmp_path):
    pem = ca[0]
    (tmp_path / "ca.crt").write_text(pem)
    from_file = run(stack_config(pki={"clusterCaCertFile": str(tmp_path / "ca.crt")}))
    from_pem = run(stack_config(pki={"clusterCaCertPem": pem}))
    assert from_file.settings.pki.cluster_ca_cert_pem == pem == from_pem.settings.pki.cluster_ca_cert_pem
    assert from_file.settings.pki.cluster_ca_cert_file == str(tmp_path / "ca.crt")
    # The same program: the same resources (the cluster CA is for the policy pack; nothing registers it).
    assert sorted((r.type, r.name) for r in from_file.resources) == sorted((r.type, r.name) for r in from_pem.resources)


def test_relative_path_is_relative_to_the_working_directory(stack_config, ca, tmp_path, monkeypatch):
    """`pulumi` runs the program in the project directory: a relative path is read from there."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text(ca[0])
    monkeypatch.chdir(tmp_path)
    result = run(stack_config(pki={"clusterCaCertFile": "certs/ca.crt"}))
    assert result.settings.pki.cluster_ca_cert_pem == ca[0]


def test_parse_reads_through_the_given_reader_and_base_dir(stack_config, ca):
    asked: list[Path] = []

    def reader(path: Path) -> bytes:
        asked.append(path)
        return ca[0].encode()

    s = parse(stack_config(pki={"clusterCaCertFile": "pki/ca.crt"}), read_file=reader, base_dir="/srv/project")
    assert asked == [Path("/srv/project/pki/ca.crt")]
    assert s.pki.cluster_ca_cert_pem == ca[0]
    assert s.pki.cluster_ca_cert_file == "pki/ca.crt"


def test_both_files_are_read_each_into_its_own_key(stack_config, ca):
    kubelet_ca = make_ca("kubelet-serving-ca")[0]
    files = {Path("/etc/k/ca.crt"): ca[0], Path("/etc/k/kubelet-ca.crt"): kubelet_ca}
    s = parse(stack_config(pki={"clusterCaCertFile": "/etc/k/ca.crt"},
                           metricsServer={"kubeletCaCertFile": "/etc/k/kubelet-ca.crt"}),
              read_file=lambda p: files[p].encode())
    assert (s.pki.cluster_ca_cert_pem, s.metrics_server.kubelet_ca_cert_pem) == (ca[0], kubelet_ca)


def test_without_the_key_nothing_is_read(stack_config):
    def reader(path: Path) -> bytes:
        raise AssertionError(f"read {path}")

    assert parse(stack_config(), read_file=reader).pki.cluster_ca_cert_pem is None


def test_missing_file_names_key_path_and_fix(stack_config, tmp_path):
    problems = problems_of(stack_config(pki={"clusterCaCertFile": "pki/nope.crt"}), base_dir=tmp_path)
    assert problems == [
        f"{KEY}: 'pki/nope.crt' cannot be read: {tmp_path}/pki/nope.crt (relative to the project directory "
        f"{tmp_path}) does not exist; create it with the cluster CA certificate, kube-apiserver's "
        "--client-ca-file, e.g. /etc/kubernetes/pki/ca.crt, or fix the path"
    ]


def test_missing_file_stops_the_program_before_any_resource(stack_config, tmp_path):
    with pytest.raises(ConfigError) as info:
        run(stack_config(pki={"clusterCaCertFile": str(tmp_path / "nope.crt")}))
    assert info.value.registrations == [] or all(r.type == "pulumi:pulumi:Stack" for r in info.value.registrations)
    assert f"{KEY}: '{tmp_path}/nope.crt' cannot be read: {tmp_path}/nope.crt does not exist" in str(info.value)


def _raise(exc: OSError):
    def reader(path: Path) -> bytes:
        raise exc
    return reader


# (case id, the key's value, reader or file contents, words of the message)
BAD = [
    ("unreadable", "/etc/k/ca.crt", _raise(PermissionError(13, "Permission denied")),
     "cannot be read: /etc/k/ca.crt: Permission denied; make it readable by the user running pulumi"),
    ("directory", "/etc/k", _raise(IsADirectoryError(21, "Is a directory")),
     "cannot be read: /etc/k is a directory; point it at the CA certificate file"),
    ("not pem", "/etc/k/ca.crt", b"hello\n", "is not a PEM certificate (/etc/k/ca.crt)"),
    ("broken pem", "/etc/k/ca.crt", b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
     "is not a PEM certificate"),
    ("der", "/etc/k/ca.der", b"\x30\x82\x01\x0a\xff", "openssl x509 -inform der"),
    ("too big", "/etc/k/ca.crt", b"x" * (300 * 1024), "is larger than 256 KiB (/etc/k/ca.crt)"),
    ("empty path", "", b"", "must be the path of a PEM file"),
]


@pytest.mark.parametrize("value, source, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file(stack_config, value, source, words):
    reader = source if callable(source) else (lambda p: source)
    problems = problems_of(stack_config(pki={"clusterCaCertFile": value}), read_file=reader)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{KEY}: {value!r} "), problems
    assert words in problems[0], problems[0]


def test_file_with_a_private_key_is_refused(stack_config, ca):
    """A copy of the masters' whole pki directory (ca.crt + ca.key concatenated) must not be accepted."""
    bundle = (ca[0] + ca[1]).encode()
    problems = problems_of(stack_config(pki={"clusterCaCertFile": "/etc/k/ca.crt"}), read_file=lambda p: bundle)
    assert problems == [
        f"{KEY}: '/etc/k/ca.crt' holds a private key (/etc/k/ca.crt); only the certificate is needed to compare "
        "the CAs, and the cluster CA's key must stay on the masters: point it at the CA certificate only "
        "(-----BEGIN CERTIFICATE-----)"
    ]
    assert ca[1].splitlines()[1] not in problems[0]


def test_both_keys_are_refused_without_reading_the_file(stack_config, ca):
    def reader(path: Path) -> bytes:
        raise AssertionError("read although clusterCaCertPem is set")

    problems = problems_of(stack_config(pki={"clusterCaCertFile": "ca.crt", "clusterCaCertPem": ca[0]}),
                           read_file=reader)
    assert problems == [
        f"{KEY}: 'ca.crt' is set together with clusterCaCertPem; choose one: remove clusterCaCertPem to read "
        "the CA from the file, or remove clusterCaCertFile"
    ]


def test_file_problems_come_with_the_other_problems(stack_config, tmp_path):
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
