"""A fake Kubernetes API server on 127.0.0.1 over real TLS, with certificates made for the test.

    certs = make_certs(tmp_path)                     # CA, server cert (127.0.0.1 + kube.test), client cert
    with FakeApiServer(certs, routes={path: obj}) as srv:
        srv.url                                      # https://127.0.0.1:<port>
        srv.requests                                 # [(path, Authorization header, client cert CN)]

Routes map a request path (with its query), or (method, path) for other methods than GET, to a JSON
object (200), or to (status, object); a str object is sent as is. Anything else is a 404 Status, as
kube-apiserver answers for a missing object. The sandbox's tests (sandbox/tests) serve its client with it
too, from its own certificates (Certs of lab/pki.py's files).
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: Path  # the CA that signs the server and client certs
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, sans=(), eku=None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(dir: Path, *, server_sans: tuple[str, ...] = ("127.0.0.1", "kube.test")) -> Certs:
    dir.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("fake-cluster-ca", ca_key, "fake-cluster-ca", ca_key, ca=True)
    other = _cert("some-other-ca", other_key, "some-other-ca", other_key, ca=True)
    sans = [x509.IPAddress(ipaddress.ip_address(s)) if s[0].isdigit() else x509.DNSName(s) for s in server_sans]
    srv_key, cli_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    srv = _cert("kube-apiserver", srv_key, "fake-cluster-ca", ca_key, sans=sans, eku=ExtendedKeyUsageOID.SERVER_AUTH)
    cli = _cert("fake-admin", cli_key, "fake-cluster-ca", ca_key, eku=ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    return Certs(
        dir=dir,
        ca=_write(dir / "ca.crt", ca.public_bytes(pem)),
        server_cert=_write(dir / "server.crt", srv.public_bytes(pem)),
        server_key=_write(dir / "server.key", _key_pem(srv_key)),
        client_cert=_write(dir / "client.crt", cli.public_bytes(pem)),
        client_key=_write(dir / "client.key", _key_pem(cli_key)),
        other_ca=_write(dir / "other-ca.crt", other.public_bytes(pem)),
    )


def status(code: int, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}


@dataclass
class FakeApiServer:
    certs: Certs
    routes: dict[str, Any] = field(default_factory=dict)
    require_client_cert: bool = False
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> FakeApiServer:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.certs.server_cert), str(self.certs.server_key))
        ctx.load_verify_locations(str(self.certs.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if int(self.headers.get("Content-Length") or 0):
                    self.rfile.read(int(self.headers["Content-Length"]))
                peer = self.connection.getpeercert()  # type: ignore[attr-defined]
                cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
                fake.requests.append((self.path, self.headers.get("Authorization"), cn))
                answer = fake.routes.get((self.command, self.path)) or (
                    fake.routes.get(self.path) if self.command == "GET" else None)
                code, body = answer if isinstance(answer, tuple) else (200, answer)
                if answer is None:
                    code, body = status(404, f"{self.path} not found")
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

        self._srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.socket = ctx.wrap_socket(self._srv.socket, server_side=True)
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.url = f"https://127.0.0.1:{self._srv.server_address[1]}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(5)
