"""kube_access: the kubeconfig the provider would use, resolved and used for a GET against a fake API
server on 127.0.0.1 over real TLS (certificates made here): file and inline certificates, tokens,
exec plugins, CA / insecure-skip-tls-verify / tls-server-name, $KUBECONFIG lists, and no proxy."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import stat
import sys
from pathlib import Path

import pytest
import yaml

from components import kube_access as ka
from tests.support.fake_apiserver import FakeApiServer, make_certs, status

NS_PATH = "/api/v1/namespaces/kube-system"
NS = {"kind": "Namespace", "metadata": {"name": "kube-system"}}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def server(certs):
    with FakeApiServer(certs, routes={NS_PATH: NS, "/forbidden": status(403, "nodes is forbidden")},
                       require_client_cert=False) as srv:
        yield srv


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, cluster: dict | None = None, user: dict | None = None, *, context: str = "admin",
               extra_contexts: list | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}, *(extra_contexts or [])],
    }


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


NO_ENV: dict[str, str] = {}


@pytest.mark.timeout(30)
def test_file_kubeconfig_with_relative_cert_files_resolved_against_its_directory(server, certs, tmp_path):
    """$KUBECONFIG: relative paths are relative to the kubeconfig's own directory (client-go's rule)."""
    d = tmp_path / "kube"
    d.mkdir()
    for p in (certs.ca, certs.client_cert, certs.client_key):
        (d / p.name).write_bytes(p.read_bytes())
    cfg = write(d / "config", kubeconfig(server.url, {"certificate-authority": "ca.crt"},
                                          {"client-certificate": "client.crt", "client-key": "client.key"}))
    ep = ka.endpoint(env={"KUBECONFIG": str(cfg)}, home=tmp_path)
    assert ep.server == server.url and "context 'admin'" in ep.where
    assert ka.get_json(ep, NS_PATH) == NS
    assert server.requests[-1] == (NS_PATH, None, "fake-admin")  # authenticated with the client cert


@pytest.mark.timeout(30)
def test_stack_kubeconfig_contents_with_inline_data(server, certs):
    """`kubernetes:kubeconfig` may hold the kubeconfig itself (what the provider accepts too)."""
    text = yaml.safe_dump(kubeconfig(server.url, {"certificate-authority-data": b64(certs.ca)},
                                     {"client-certificate-data": b64(certs.client_cert),
                                      "client-key-data": b64(certs.client_key)}))
    ep = ka.endpoint(text, env=NO_ENV, home=Path("/nonexistent"))
    assert "inline" in ep.where
    assert ka.get_json(ep, NS_PATH) == NS
    assert server.requests[-1][2] == "fake-admin"


@pytest.mark.timeout(30)
def test_stack_kubeconfig_path_wins_over_the_environment(server, certs, tmp_path):
    cfg = write(tmp_path / "admin.kubeconfig", kubeconfig(server.url, {"certificate-authority": str(certs.ca)},
                                                          {"token": "t0ken"}))
    bogus = write(tmp_path / "bogus", kubeconfig("https://198.18.255.254:1"))
    ep = ka.endpoint(str(cfg), env={"KUBECONFIG": str(bogus)}, home=tmp_path)
    assert ka.get_json(ep, NS_PATH) == NS
    assert server.requests[-1][1] == "Bearer t0ken"


@pytest.mark.timeout(30)
def test_token_file_and_basic_auth(server, certs, tmp_path):
    (tmp_path / "token").write_text("from-a-file\n")
    cfg = kubeconfig(server.url, {"certificate-authority": str(certs.ca)}, {"tokenFile": "token"})
    ep = ka.endpoint(env={"KUBECONFIG": str(write(tmp_path / "c", cfg))}, home=tmp_path)
    ka.get_json(ep, NS_PATH)
    assert server.requests[-1][1] == "Bearer from-a-file"
    cfg = kubeconfig(server.url, {"certificate-authority": str(certs.ca)}, {"username": "u", "password": "p"})
    ep = ka.endpoint(env={"KUBECONFIG": str(write(tmp_path / "c", cfg))}, home=tmp_path)
    ka.get_json(ep, NS_PATH)
    assert server.requests[-1][1] == "Basic " + base64.b64encode(b"u:p").decode()


@pytest.mark.timeout(30)
def test_exec_credential_plugin(server, certs, tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['spec']['interactive'] is False, info\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',\n"
        "                  'status': {'token': os.environ['GREETING'] + '-' + sys.argv[1]}}))\n"
    )
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                     "args": [str(plugin), "arg1"], "env": [{"name": "GREETING", "value": "hello"}]}}
    cfg = write(tmp_path / "c", kubeconfig(server.url, {"certificate-authority": str(certs.ca)}, user))
    ep = ka.endpoint(str(cfg), env={"PATH": "/usr/bin:/bin"}, home=tmp_path)
    ka.get_json(ep, NS_PATH)
    assert server.requests[-1][1] == "Bearer hello-arg1"


def test_failing_exec_plugin_is_named_without_its_output(tmp_path):
    user = {"exec": {"command": sys.executable, "args": ["-c", "print('s3cret'); raise SystemExit(3)"]}}
    cfg = write(tmp_path / "c", kubeconfig("https://127.0.0.1:1", None, user))
    with pytest.raises(ka.KubeAccessError, match="exited 3") as info:
        ka.endpoint(str(cfg), env=NO_ENV, home=tmp_path)
    assert "s3cret" not in str(info.value)


@pytest.mark.timeout(30)
def test_server_is_verified_against_the_clusters_ca(server, certs, tmp_path):
    wrong = kubeconfig(server.url, {"certificate-authority": str(certs.other_ca)}, {"token": "x"})
    ep = ka.endpoint(str(write(tmp_path / "c", wrong)), env=NO_ENV, home=tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        ka.get_json(ep, NS_PATH)
    insecure = kubeconfig(server.url, {"insecure-skip-tls-verify": True}, {"token": "x"})
    ep = ka.endpoint(str(write(tmp_path / "c", insecure)), env=NO_ENV, home=tmp_path)
    assert ka.get_json(ep, NS_PATH) == NS


@pytest.mark.timeout(30)
def test_tls_server_name_is_the_name_verified(tmp_path):
    """A server cert without the address's SAN verifies only with the kubeconfig's tls-server-name."""
    certs = make_certs(tmp_path / "dns-only", server_sans=("kube.test",))
    with FakeApiServer(certs, routes={NS_PATH: NS}) as srv:
        plain = kubeconfig(srv.url, {"certificate-authority": str(certs.ca)})
        ep = ka.endpoint(str(write(tmp_path / "c", plain)), env=NO_ENV, home=tmp_path)
        with pytest.raises(ssl.SSLCertVerificationError):
            ka.get_json(ep, NS_PATH)
        named = kubeconfig(srv.url, {"certificate-authority": str(certs.ca), "tls-server-name": "kube.test"})
        ep = ka.endpoint(str(write(tmp_path / "c", named)), env=NO_ENV, home=tmp_path)
        assert ka.get_json(ep, NS_PATH) == NS


@pytest.mark.timeout(30)
def test_kubeconfig_list_merges_first_wins_and_context_overrides(server, certs, tmp_path):
    first = kubeconfig(server.url, {"certificate-authority": str(certs.ca)}, {"token": "first"}, context="")
    first.pop("current-context")
    first["contexts"] = [{"name": "other", "context": {"cluster": "c", "user": "u"}}]
    second = kubeconfig("https://198.18.255.254:1", None, {"token": "second"}, context="other")
    env = {"KUBECONFIG": f"{write(tmp_path / 'a', first)}:{tmp_path / 'missing'}:{write(tmp_path / 'b', second)}"}
    ep = ka.endpoint(env=env, home=tmp_path)  # current-context from b, everything named from a
    assert ep.server == server.url and ep.token == "first"
    with pytest.raises(ka.KubeAccessError, match="has no context 'nope'"):
        ka.endpoint(context="nope", env=env, home=tmp_path)
    ep = ka.endpoint(cluster="c", context="other", env=env, home=tmp_path)
    assert ka.get_json(ep, NS_PATH) == NS


def test_default_is_home_kube_config_and_its_absence_is_explained(tmp_path):
    with pytest.raises(ka.KubeAccessError, match=r"no kubeconfig: set kubernetes:kubeconfig, or provide .*\.kube/config"):
        ka.endpoint(env=NO_ENV, home=tmp_path)
    (tmp_path / ".kube").mkdir()
    write(tmp_path / ".kube" / "config", kubeconfig("https://127.0.0.1:6443", None, {"token": "t"}))
    assert ka.endpoint(env=NO_ENV, home=tmp_path).server == "https://127.0.0.1:6443"


@pytest.mark.parametrize("text, message", [
    ("just: [a, list", "not valid YAML"),
    ("- a\n- b\n", "neither a readable kubeconfig file nor kubeconfig YAML"),
    (yaml.safe_dump({"contexts": [], "clusters": []}), "has no current-context; set kubernetes:context"),
])
def test_bad_kubeconfigs_are_explained(text, message):
    with pytest.raises(ka.KubeAccessError, match=message):
        ka.endpoint(text, env=NO_ENV, home=Path("/nonexistent"))


@pytest.mark.timeout(30)
def test_http_errors_carry_the_status_message_but_no_credential(server, certs, tmp_path):
    cfg = kubeconfig(server.url, {"certificate-authority": str(certs.ca)}, {"token": "t0p-s3cret"})
    ep = ka.endpoint(str(write(tmp_path / "c", cfg)), env=NO_ENV, home=tmp_path)
    assert ka.get_json(ep, "/apis/apps/v1/nope") is None
    with pytest.raises(ka.HttpError) as info:
        ka.get_json(ep, "/forbidden")
    assert info.value.status == 403 and str(info.value) == "HTTP 403: nodes is forbidden"
    assert "t0p-s3cret" not in repr(ep)


@pytest.mark.timeout(30)
def test_proxy_settings_in_the_environment_are_not_used(server, certs, tmp_path, monkeypatch):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: a proxy there would refuse
    try:
        proxy = f"http://127.0.0.1:{dead.getsockname()[1]}"
        for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(var, proxy)
        cfg = kubeconfig(server.url, {"certificate-authority": str(certs.ca)}, {"token": "t"})
        ep = ka.endpoint(str(write(tmp_path / "c", cfg)), env=NO_ENV, home=tmp_path)
        assert ka.get_json(ep, NS_PATH) == NS
    finally:
        dead.close()


def test_client_key_file_is_private_and_gone_after_use(server, certs, tmp_path, monkeypatch):
    seen: list[tuple[Path, int]] = []
    real = ssl.SSLContext.load_cert_chain

    def spy(self, certfile, keyfile=None, password=None):
        seen.append((Path(keyfile), stat.S_IMODE(Path(keyfile).stat().st_mode)))
        return real(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    cfg = kubeconfig(server.url, {"certificate-authority": str(certs.ca)},
                     {"client-certificate-data": b64(certs.client_cert), "client-key-data": b64(certs.client_key)})
    ep = ka.endpoint(json.dumps(cfg), env=NO_ENV, home=tmp_path)
    assert ka.get_json(ep, NS_PATH) == NS
    (key, mode), = seen
    assert mode == 0o600 and not key.exists() and not key.parent.exists()


@pytest.mark.parametrize("user", [
    {"exec": {"command": "true", "env": [{"name": "ONLY_A_NAME"}]}},  # an env entry without its value
    {"client-certificate-data": 12345},                             # YAML read a number
    {"client-key": ["a", "list"]},
], ids=["exec env without value", "cert data not a string", "key path not a string"])
def test_a_malformed_kubeconfig_user_is_a_clear_error_not_a_traceback(tmp_path, user):
    cfg = write(tmp_path / "c", kubeconfig("https://127.0.0.1:1", None, user))
    with pytest.raises(ka.KubeAccessError, match=r"\): user "):
        ka.endpoint(str(cfg), env=NO_ENV, home=tmp_path)
