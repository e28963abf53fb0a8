"""tools/pg_backend.py without a server: the SCRAM verifier against RFC 7677's example exchange, the backend
URL, and its config errors. The server itself (init, start, role, restart) is proven by
tests/e2e/test_backend_postgres.py, which starts one."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from tools import pg_backend
from tools.pg_backend import PgBackend, scram_verifier

# RFC 7677 section 3: user "user", password "pencil"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_NONCE = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_AUTH_MESSAGE = (f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={RFC_NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                    f"c=biws,r={RFC_NONCE}").encode()
RFC_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_the_scram_verifier_accepts_rfc_7677s_client_and_signs_as_its_server():
    """A server holding only our verifier checks the RFC's client proof and answers its server signature."""
    v = scram_verifier("pencil", salt=RFC_SALT)
    head, keys = v.split("$", 1)[1].split("$")
    assert v.startswith("SCRAM-SHA-256$4096:") and base64.b64decode(head.split(":")[1]) == RFC_SALT
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    client_signature = hmac.new(stored_key, RFC_AUTH_MESSAGE, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(RFC_PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert hmac.new(server_key, RFC_AUTH_MESSAGE, hashlib.sha256).digest() == RFC_SERVER_SIGNATURE
    assert scram_verifier("pencil", salt=RFC_SALT) == v and scram_verifier("pencil") != v  # fresh salt


def test_the_url_names_the_pgpass_file_and_carries_no_password(tmp_path):
    url = PgBackend(tmp_path, 54400).url()
    assert url.startswith("postgres://metrics_aggregation@127.0.0.1:54400/metrics_aggregation_state?")
    assert f"passfile={tmp_path}/pgpass" in url and "sslmode=disable" in url
    assert ":" not in url.split("//", 1)[1].split("@", 1)[0]


@pytest.mark.parametrize("port", ["80", "70000", "5432x"])
def test_a_bad_port_is_a_config_error_naming_the_key(port, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PG_BACKEND_PORT", port)
    monkeypatch.setenv("PG_BACKEND_DIR", str(tmp_path))
    assert pg_backend.main(["url"]) == 2
    err = capsys.readouterr().err
    assert "PG_BACKEND_PORT (--port)" in err and "1024-65535" in err, err


def test_url_before_backend_up_says_what_to_run(capsys, tmp_path: Path):
    assert pg_backend.main(["url", "--dir", str(tmp_path / "none"), "--port", "54400"]) == 2
    assert "run `make backend-up` first" in capsys.readouterr().err
