"""policy/: the guardrails policy pack (pulumi-policy), tested by building the validation args by hand.

Props are wrapped with pulumi-policy's own `unknown_checking_proxy`, as its analyzer does, so unknown
values behave as in a real preview. One test also starts the real pack (`policy/__main__.py`) as the CLI
would and talks to it over the analyzer gRPC protocol.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

ROOT = Path(__file__).resolve().parents[2]
POLICY_DIR = ROOT / "policy"
sys.path.insert(0, str(POLICY_DIR))

import aggregation_policies as ap  # noqa: E402

STACK = "urn:pulumi:prod::metrics-aggregation::"


# --- building the arguments ------------------------------------------------------------------------


def opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def urn(rtype: str, name: str, parent: str = "") -> str:
    return f"{STACK}{parent + '$' if parent else ''}{rtype}::{name}"


def resource(rtype: str, name: str, props: dict) -> PolicyResource:
    return PolicyResource(rtype, unknown_checking_proxy(props), urn(rtype, name), name, opts(), None, None, [], {})


def stack_args(resources: list[PolicyResource], config: dict | None = None) -> StackValidationArgs:
    return StackValidationArgs(resources, config)


def resource_args(rtype: str, name: str, props: dict, config: dict | None = None) -> ResourceValidationArgs:
    return ResourceValidationArgs(rtype, unknown_checking_proxy(props), urn(rtype, name), name, opts(), None, config)


def run(fn, args) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    fn(args, lambda message, urn=None: found.append((message, urn)))
    return found


def messages(fn, args) -> list[str]:
    return [m for m, _ in run(fn, args)]


def make_ca(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM).decode()


CLUSTER_CA = make_ca("kubernetes")
AGGREGATOR_CA = make_ca("front-proxy-aggregator-ca")
SCRIPT = "/var/lib/metrics-aggregation/scripts/apiserver-aggregation-0123456789ab.sh"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIJ61Z/WU22zJv1PCVZgzj8/uePmKgMlV6P4RboEwb3h"


def host_command(action: str, flags: dict[str, str], sudo: bool = True) -> str:
    """A command line shaped like the program's: the installed script by path, its action, flags follow."""
    argv = ["bash", SCRIPT, action, "--master", "cp1", "--cert-dir", "/etc/kubernetes/pki"]
    for k, v in flags.items():
        argv += ["--flag", f"{k}={v}"]
    line = " ".join(shlex.quote(a) for a in argv)
    return f"sudo -n {line}" if sudo else line


def flags(allowed: str = "front-proxy-aggregator") -> dict[str, str]:
    return {
        "--requestheader-client-ca-file": "/etc/kubernetes/pki/aggregator-ca.pem",
        "--requestheader-allowed-names": allowed,
        "--proxy-client-cert-file": "/etc/kubernetes/pki/aggregator.pem",
    }


def apiserver_props(flags_by_master: dict[str, dict[str, str]], cert_dir: str = "/etc/kubernetes/pki") -> dict:
    """ApiserverAggregation's `masters` as the program records them: what each master's flags step sets."""
    return {"masters": [{"name": m, "flagsStep": f"{m}-flags", "certDir": cert_dir, "flags": f}
                        for m, f in flags_by_master.items()]}


def connection(host_key: str | None = HOST_KEY, **extra) -> dict:
    c = {"host": "cp1.prod.k8s.internal", "port": 22, "user": "deploy", "privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----"}
    if host_key:
        c["hostKey"] = host_key
    c.update(extra)
    return c


def good_stack(**over) -> list[PolicyResource]:
    """The resources of a production stack as the program registers them (outputs include the inputs)."""
    p = {
        "ca": {"isCaCertificate": True, "subject": {"commonName": "front-proxy-aggregator-ca"}, "certPem": AGGREGATOR_CA,
               "allowedUses": ["cert_signing", "key_encipherment", "digital_signature"], "validityPeriodHours": 87600},
        "csr": {"subject": {"commonName": "front-proxy-aggregator", "organization": "example-prod"}},
        "cert": {"allowedUses": ["client_auth", "key_encipherment", "digital_signature"], "caCertPem": AGGREGATOR_CA,
                 "validityPeriodHours": 8760},
        "serving": {"allowedUses": ["server_auth", "key_encipherment", "digital_signature"], "caCertPem": make_ca("ms-ca"),
                    "validityPeriodHours": 8760},
        "flags": {"create": host_command("apply", flags()), "connection": connection()},
        "certs": {"create": host_command("install-certs", {}), "connection": connection()},
        "apiserver": apiserver_props({"cp1": flags()}),
    }
    for k, v in over.items():
        p[k] = v
    return [
        resource(ap.SELF_SIGNED_CERT, "aggregator-ca", p["ca"]),
        resource(ap.CERT_REQUEST, "proxy-client", p["csr"]),
        resource(ap.LOCALLY_SIGNED_CERT, "proxy-client", p["cert"]),
        resource(ap.LOCALLY_SIGNED_CERT, "metrics-server-serving-cert", p["serving"]),
        resource(ap.REMOTE_COMMAND, "cp1-certs", p["certs"]),
        resource(ap.REMOTE_COMMAND, "cp1-flags", p["flags"]),
        resource(ap.APISERVER, "apiserver", p["apiserver"]),
    ]


PROD = {"production": True}
DEV = {"production": False}


@pytest.fixture(autouse=True)
def _no_cli_environment(monkeypatch):
    for var in ("PULUMI_STACK", "PULUMI_CONFIG"):
        monkeypatch.delenv(var, raising=False)


# --- aggregator-ca-not-cluster-ca ------------------------------------------------------------------


def test_ca_policy_passes_on_a_separate_ca():
    assert run(ap.validate_ca_not_cluster_ca, stack_args(good_stack(), {"clusterCaCertPem": CLUSTER_CA})) == []
    assert run(ap.validate_ca_not_cluster_ca, stack_args(good_stack())) == []


def test_ca_policy_fails_when_the_ca_is_the_cluster_ca():
    ca = {"isCaCertificate": True, "subject": {"commonName": "front-proxy-aggregator-ca"}, "certPem": CLUSTER_CA}
    found = run(ap.validate_ca_not_cluster_ca, stack_args(good_stack(ca=ca), {"clusterCaCertPem": CLUSTER_CA}))
    assert len(found) == 1
    assert "CA 'aggregator-ca' is the cluster CA (same certificate or key as clusterCaCertPem)" in found[0][0]
    assert found[0][1] == urn(ap.SELF_SIGNED_CERT, "aggregator-ca")


def test_ca_policy_fails_on_the_cluster_ca_name_even_before_the_cert_exists():
    ca = {"isCaCertificate": True, "subject": {"commonName": "kubernetes"}, "certPem": UNKNOWN_STRING_VALUE}
    [message] = messages(ap.validate_ca_not_cluster_ca, stack_args(good_stack(ca=ca), {"clusterCaCertPem": CLUSTER_CA}))
    assert "has the cluster CA's common name 'kubernetes'" in message
    [message] = messages(ap.validate_ca_not_cluster_ca, stack_args(good_stack(ca=ca)))
    assert "is named 'kubernetes', the name of the cluster CA" in message


def test_ca_policy_fails_when_the_proxy_cert_is_signed_by_the_cluster_ca():
    cert = {"allowedUses": ["client_auth"], "caCertPem": CLUSTER_CA, "validityPeriodHours": 8760}
    [message] = messages(ap.validate_ca_not_cluster_ca, stack_args(good_stack(cert=cert), {"clusterCaCertPem": CLUSTER_CA}))
    assert "certificate 'proxy-client' is signed by the cluster CA" in message


def test_ca_policy_reads_the_cluster_ca_from_the_stack_config(monkeypatch):
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"metrics-aggregation:pki": json.dumps({"clusterCaCertPem": CLUSTER_CA})}))
    ca = {"isCaCertificate": True, "subject": {"commonName": "x"}, "certPem": CLUSTER_CA}
    [message] = messages(ap.validate_ca_not_cluster_ca, stack_args(good_stack(ca=ca)))
    assert "is the cluster CA" in message


def stack_pki(monkeypatch, **pki) -> None:
    """The stack config `metrics-aggregation:pki` as the CLI hands it to the pack (PULUMI_CONFIG)."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"metrics-aggregation:pki": json.dumps(pki)}))


def test_ca_policy_fails_when_the_cluster_ca_file_holds_the_aggregator_ca(monkeypatch, tmp_path):
    (tmp_path / "ca.crt").write_text(AGGREGATOR_CA)
    stack_pki(monkeypatch, clusterCaCertFile=str(tmp_path / "ca.crt"))
    found = run(ap.validate_ca_not_cluster_ca, stack_args(good_stack()))
    assert [m for m, _ in found] == [
        "CA 'aggregator-ca' is the cluster CA (same certificate or key as pki.clusterCaCertFile); generate a "
        "separate aggregator CA (pki.caCommonName names it) and keep the cluster CA out of "
        "--requestheader-client-ca-file.",
        "certificate 'proxy-client' is signed by the cluster CA (caCertPem equals pki.clusterCaCertFile); generate "
        "a separate aggregator CA (pki.caCommonName names it) and keep the cluster CA out of "
        "--requestheader-client-ca-file.",
    ]
    assert [u for _, u in found] == [urn(ap.SELF_SIGNED_CERT, "aggregator-ca"), urn(ap.LOCALLY_SIGNED_CERT, "proxy-client")]


def test_ca_policy_passes_when_the_cluster_ca_file_holds_another_ca(monkeypatch, tmp_path):
    (tmp_path / "ca.crt").write_text(CLUSTER_CA)
    stack_pki(monkeypatch, clusterCaCertFile=str(tmp_path / "ca.crt"))
    assert run(ap.validate_ca_not_cluster_ca, stack_args(good_stack())) == []
    # and the file is really compared: the cluster CA's own certificate as the aggregator CA fails
    ca = {"isCaCertificate": True, "subject": {"commonName": "x"}, "certPem": CLUSTER_CA}
    [message] = messages(ap.validate_ca_not_cluster_ca, stack_args(good_stack(ca=ca)))
    assert "CA 'aggregator-ca' is the cluster CA (same certificate or key as pki.clusterCaCertFile)" in message


def test_ca_policy_reads_a_relative_cluster_ca_file_from_the_working_directory(monkeypatch, tmp_path):
    """Under `pulumi preview/up` the working directory is where pulumi runs the pack."""
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_text(AGGREGATOR_CA)
    monkeypatch.chdir(tmp_path)
    stack_pki(monkeypatch, clusterCaCertFile="pki/ca.crt")
    assert len(run(ap.validate_ca_not_cluster_ca, stack_args(good_stack()))) == 2


@pytest.mark.parametrize("case", ["missing", "directory", "not pem"])
def test_ca_policy_reports_an_unusable_cluster_ca_file(monkeypatch, tmp_path, case):
    path = tmp_path / "pki" / "ca.crt"
    if case == "directory":
        path.mkdir(parents=True)
    elif case == "not pem":
        path.parent.mkdir()
        path.write_text("hello\n")
    stack_pki(monkeypatch, clusterCaCertFile=str(path))
    found = run(ap.validate_ca_not_cluster_ca, stack_args(good_stack()))
    assert len(found) == 1, found
    message, where = found[0]
    what = {"missing": f"cannot be read: {path} does not exist", "directory": f"cannot be read: {path} is a directory",
            "not pem": f"is not a PEM certificate ({path})"}[case]
    assert message == (
        f"metrics-aggregation:pki.clusterCaCertFile (stack config): '{path}' {what}; the aggregator CA cannot be "
        "compared with the cluster CA: put the cluster CA certificate (kube-apiserver's --client-ca-file, e.g. "
        "/etc/kubernetes/pki/ca.crt) there, or set policy config clusterCaCertPem "
        "(policy/pack_config.py --cluster-ca-cert FILE)."
    )
    assert where is None


def test_ca_policy_names_the_working_directory_of_a_relative_unreadable_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    stack_pki(monkeypatch, clusterCaCertFile="pki/ca.crt")
    [message] = messages(ap.validate_ca_not_cluster_ca, stack_args(good_stack()))
    assert (f"'pki/ca.crt' cannot be read: {tmp_path}/pki/ca.crt (relative to the working directory {tmp_path}) "
            "does not exist") in message


def test_ca_policy_prefers_a_given_pem_to_the_cluster_ca_file(monkeypatch, tmp_path):
    """The policy config's clusterCaCertPem (or the stack's pki.clusterCaCertPem) wins; the file is not read."""
    stack_pki(monkeypatch, clusterCaCertFile=str(tmp_path / "nope.crt"))
    assert run(ap.validate_ca_not_cluster_ca, stack_args(good_stack(), {"clusterCaCertPem": CLUSTER_CA})) == []
    stack_pki(monkeypatch, clusterCaCertFile=str(tmp_path / "nope.crt"), clusterCaCertPem=CLUSTER_CA)
    assert run(ap.validate_ca_not_cluster_ca, stack_args(good_stack())) == []


# --- proxy-client-cert-accepted --------------------------------------------------------------------


def test_proxy_policy_passes_on_the_good_stack():
    assert run(ap.validate_proxy_client_cert, stack_args(good_stack())) == []


def test_proxy_policy_passes_with_the_cn_in_a_list():
    props = apiserver_props({"cp1": flags("someone-else,front-proxy-aggregator")})
    assert run(ap.validate_proxy_client_cert, stack_args(good_stack(apiserver=props))) == []


def test_proxy_policy_fails_without_client_auth():
    cert = {"allowedUses": ["server_auth", "digital_signature"], "caCertPem": AGGREGATOR_CA}
    found = run(ap.validate_proxy_client_cert, stack_args(good_stack(cert=cert)))
    assert len(found) == 1  # the metrics-server serving cert (server_auth only) is not the proxy client
    assert "proxy-client certificate 'proxy-client' lacks client_auth in allowedUses" in found[0][0]
    assert found[0][1] == urn(ap.LOCALLY_SIGNED_CERT, "proxy-client")


def test_proxy_policy_fails_when_the_cn_is_not_allowed():
    props = apiserver_props({"cp1": flags("aggregator")})
    found = run(ap.validate_proxy_client_cert, stack_args(good_stack(apiserver=props)))
    assert len(found) == 1
    assert (
        "proxy-client certificate CN 'front-proxy-aggregator' is not in "
        "--requestheader-allowed-names=aggregator set by command 'cp1-flags'" in found[0][0]
    )
    assert found[0][1] == urn(ap.REMOTE_COMMAND, "cp1-flags")


def test_proxy_policy_fails_on_an_empty_allowed_names_flag():
    props = apiserver_props({"cp1": flags("")})
    [message] = messages(ap.validate_proxy_client_cert, stack_args(good_stack(apiserver=props)))
    assert "sets --requestheader-allowed-names empty, which accepts ANY client certificate" in message


def test_proxy_policy_fails_when_no_command_sets_the_flag():
    props = apiserver_props({"cp1": {"--enable-aggregator-routing": "true"}})
    [message] = messages(ap.validate_proxy_client_cert, stack_args(good_stack(apiserver=props)))
    assert "no command:remote:Command sets --requestheader-allowed-names" in message


def test_proxy_policy_fails_without_a_proxy_client_cert_request():
    resources = [r for r in good_stack() if r.resource_type != ap.CERT_REQUEST]
    [message] = messages(ap.validate_proxy_client_cert, stack_args(resources))
    assert "no tls CertRequest named 'proxy-client'" in message


def test_proxy_policy_skips_unknown_values_in_preview():
    cert = {"allowedUses": UNKNOWN_STRING_VALUE}
    csr = {"subject": {"commonName": UNKNOWN_STRING_VALUE}}
    assert run(ap.validate_proxy_client_cert, stack_args(good_stack(cert=cert, csr=csr))) == []


# --- no-kubelet-insecure-tls-in-production ---------------------------------------------------------


def deployment(args: list[str]) -> dict:
    return {"spec": {"template": {"spec": {"containers": [{"name": "metrics-server", "args": args}]}}}}


GOOD_ARGS = ["--cert-dir=/tmp", "--secure-port=10250", "--kubelet-certificate-authority=/etc/kubelet-ca/ca.crt"]


def test_kubelet_tls_policy_passes_on_verified_kubelets():
    for config in (PROD, DEV):
        assert run(ap.validate_no_kubelet_insecure_tls, resource_args(ap.DEPLOYMENT, "ms", deployment(GOOD_ARGS), config)) == []
    ok = deployment(GOOD_ARGS + ["--kubelet-insecure-tls=false"])
    assert run(ap.validate_no_kubelet_insecure_tls, resource_args(ap.DEPLOYMENT, "ms", ok, PROD)) == []


def test_kubelet_tls_policy_fails_on_production_only():
    bad = deployment(GOOD_ARGS + ["--kubelet-insecure-tls"])
    [message] = messages(ap.validate_no_kubelet_insecure_tls, resource_args(ap.DEPLOYMENT, "metrics-server-deployment", bad, PROD))
    assert "container 'metrics-server' of Deployment 'metrics-server-deployment' runs with --kubelet-insecure-tls" in message
    assert run(ap.validate_no_kubelet_insecure_tls, resource_args(ap.DEPLOYMENT, "ms", bad, DEV)) == []


def test_kubelet_tls_policy_defaults_production_from_the_stack_name(monkeypatch):
    bad = deployment(["--kubelet-insecure-tls=true"])
    monkeypatch.setenv("PULUMI_STACK", "prod")
    assert len(run(ap.validate_no_kubelet_insecure_tls, resource_args(ap.DEPLOYMENT, "ms", bad))) == 1
    monkeypatch.setenv("PULUMI_STACK", "dev")
    assert run(ap.validate_no_kubelet_insecure_tls, resource_args(ap.DEPLOYMENT, "ms", bad)) == []


def test_kubelet_tls_policy_checks_the_flags_of_every_master():
    props = apiserver_props({"cp1": {"--kubelet-insecure-tls": "true"}})
    [message] = messages(ap.validate_no_kubelet_insecure_tls, resource_args(ap.APISERVER, "apiserver", props, PROD))
    assert "command 'cp1-flags' passes --kubelet-insecure-tls=true (create)" in message
    # the command lines are never read: the script text mentions the flag, but no flag sets it
    props = {**apiserver_props({"cp1": flags()}), "create": host_command("apply", {"--kubelet-insecure-tls": "true"})}
    assert run(ap.validate_no_kubelet_insecure_tls, resource_args(ap.APISERVER, "apiserver", props, PROD)) == []
    assert run(ap.validate_no_kubelet_insecure_tls, resource_args(
        ap.REMOTE_COMMAND, "cp1-flags", {"create": host_command("apply", {"--kubelet-insecure-tls": "true"})}, PROD)) == []


# --- no-insecure-skip-tls-verify-in-production -----------------------------------------------------


def api_service(**spec) -> dict:
    return {"metadata": {"name": "v1beta1.metrics.k8s.io"}, "spec": {"group": "metrics.k8s.io", "version": "v1beta1", **spec}}


def test_api_service_policy_passes_with_a_ca_bundle():
    good = api_service(caBundle="LS0tLS1CRUdJTi...", insecureSkipTLSVerify=False)
    assert run(ap.validate_no_insecure_skip_tls_verify, resource_args(ap.API_SERVICE, "apiservice", good, PROD)) == []


def test_api_service_policy_fails_on_production_only():
    bad = api_service(insecureSkipTLSVerify=True)
    [message] = messages(ap.validate_no_insecure_skip_tls_verify, resource_args(ap.API_SERVICE, "metrics-server-apiservice", bad, PROD))
    assert "APIService 'metrics-server-apiservice' sets spec.insecureSkipTLSVerify" in message
    assert run(ap.validate_no_insecure_skip_tls_verify, resource_args(ap.API_SERVICE, "x", bad, DEV)) == []


# --- strong-keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "props",
    [
        {"algorithm": "RSA", "rsaBits": 2048},
        {"algorithm": "RSA", "rsaBits": 4096},
        {"algorithm": "RSA"},  # the provider's default is 2048
        {"algorithm": "ECDSA", "ecdsaCurve": "P256"},
        {"algorithm": "ECDSA", "ecdsaCurve": "P384"},
        {"algorithm": UNKNOWN_STRING_VALUE},
    ],
)
def test_key_policy_passes_on_strong_keys(props):
    assert run(ap.validate_strong_keys, resource_args(ap.PRIVATE_KEY, "proxy-client-key", props)) == []


@pytest.mark.parametrize(
    "props, message",
    [
        ({"algorithm": "RSA", "rsaBits": 1024}, "private key 'k' is RSA 1024 bits; use at least 2048"),
        ({"algorithm": "ECDSA", "ecdsaCurve": "P224"}, "private key 'k' is ECDSA P224; use P256 or stronger"),
        ({"algorithm": "ECDSA"}, "private key 'k' is ECDSA P224"),  # the provider's default curve
        ({"algorithm": "ED25519"}, "private key 'k' uses algorithm ED25519; use RSA (>= 2048 bits) or ECDSA"),
    ],
)
def test_key_policy_fails_on_weak_keys(props, message):
    [found] = messages(ap.validate_strong_keys, resource_args(ap.PRIVATE_KEY, "k", props))
    assert message in found


# --- leaf-validity-bounded -------------------------------------------------------------------------


def test_validity_policy_passes_within_a_year_and_ignores_cas():
    leaf = {"validityPeriodHours": 8760, "allowedUses": ["client_auth"]}
    assert run(ap.validate_leaf_validity, resource_args(ap.LOCALLY_SIGNED_CERT, "proxy-client", leaf)) == []
    ca = {"isCaCertificate": True, "validityPeriodHours": 87600}
    assert run(ap.validate_leaf_validity, resource_args(ap.SELF_SIGNED_CERT, "aggregator-ca", ca)) == []


def test_validity_policy_fails_above_the_limit():
    leaf = {"validityPeriodHours": 17520}
    [message] = messages(ap.validate_leaf_validity, resource_args(ap.LOCALLY_SIGNED_CERT, "proxy-client", leaf))
    assert "certificate 'proxy-client' is valid for 17520 hours, above the 8760-hour limit" in message
    self_signed_leaf = {"isCaCertificate": False, "validityPeriodHours": 9000}
    assert len(run(ap.validate_leaf_validity, resource_args(ap.SELF_SIGNED_CERT, "leaf", self_signed_leaf))) == 1


def test_validity_policy_limit_is_configurable():
    leaf = {"validityPeriodHours": 8760}
    config = {"maxLeafValidityHours": 4380.0}  # numbers arrive as floats through protobuf Struct
    [message] = messages(ap.validate_leaf_validity, resource_args(ap.LOCALLY_SIGNED_CERT, "proxy-client", leaf, config))
    assert "above the 4380-hour limit" in message


# --- host-keys-pinned-in-production ----------------------------------------------------------------


def test_host_key_policy_passes_when_pinned_or_not_production():
    assert run(ap.validate_host_keys_pinned, resource_args(ap.REMOTE_COMMAND, "cp1-flags", {"connection": connection()}, PROD)) == []
    unpinned = {"connection": connection(host_key=None)}
    assert run(ap.validate_host_keys_pinned, resource_args(ap.REMOTE_COMMAND, "cp1-flags", unpinned, DEV)) == []


def test_host_key_policy_fails_unpinned_on_production():
    unpinned = {"connection": connection(host_key=None)}
    [message] = messages(ap.validate_host_keys_pinned, resource_args(ap.REMOTE_COMMAND, "cp1-flags", unpinned, PROD))
    assert "command 'cp1-flags' connects to cp1.prod.k8s.internal without connection.hostKey" in message


def test_host_key_policy_checks_the_bastion_too():
    props = {"connection": connection(proxy={"host": "bastion.prod", "user": "jump"})}
    [message] = messages(ap.validate_host_keys_pinned, resource_args(ap.REMOTE_COMMAND, "cp1-flags", props, PROD))
    assert "jumps through bastion bastion.prod without connection.proxy.hostKey" in message


# --- no-dangerous-apiserver-flags -----------------------------------------------------------------

DENIED = {"deniedFlags": list(ap.DEFAULT_DENIED_FLAGS)}


def flag_messages(extra: dict[str, str], config: dict | None = None) -> list[str]:
    props = apiserver_props({"cp1": {**flags(), **extra}})
    return messages(ap.validate_no_dangerous_apiserver_flags,
                    resource_args(ap.APISERVER, "apiserver", props, DENIED if config is None else config))


def test_flag_policy_passes_on_ordinary_extra_flags():
    ordinary = {"--requestheader-uid-headers": "X-Remote-Uid", "--anonymous-auth": "false",
                "--authorization-mode": "Node,RBAC", "--client-ca-file": "/etc/kubernetes/pki/ca.crt", "--v": "2"}
    assert flag_messages(ordinary) == []
    # no master gets a flag (apiserver.manage: false); the aggregator CA as the requestheader CA is the point
    assert messages(ap.validate_no_dangerous_apiserver_flags,
                    resource_args(ap.APISERVER, "apiserver", apiserver_props({}), DENIED)) == []
    # a command line is never read, whatever it says
    line = host_command("apply", {"--anonymous-auth": "true"})
    assert messages(ap.validate_no_dangerous_apiserver_flags,
                    resource_args(ap.REMOTE_COMMAND, "cp1-flags", {"create": line}, DENIED)) == []


@pytest.mark.parametrize("extra, words", [
    ({"--client-ca-file": "/etc/kubernetes/pki/aggregator-ca.pem"}, "the aggregator (requestheader) CA"),
    ({"--client-ca-file": "/etc/kubernetes/pki/./aggregator-ca.pem"}, "the aggregator (requestheader) CA"),
    ({"--anonymous-auth": "true"}, "--anonymous-auth=true: unauthenticated requests"),
    ({"--anonymous-auth": "1"}, "--anonymous-auth=1"),
    ({"--anonymous-auth": "True"}, "--anonymous-auth=True"),
    ({"--authorization-mode": "AlwaysAllow"}, "AlwaysAllow lets every"),
    ({"--authorization-mode": "Node,RBAC,AlwaysAllow"}, "--authorization-mode=Node,RBAC,AlwaysAllow"),
    ({"--token-auth-file": "/etc/kubernetes/tokens.csv"}, "sets --token-auth-file, a flag the policy config lists"),
], ids=["ca file", "ca file not normalised", "anonymous", "anonymous 1", "anonymous True", "always allow",
        "always allow in a list", "denied by default"])
def test_flag_policy_refuses_dangerous_extra_flags(extra, words):
    [message] = flag_messages(extra)
    assert message.startswith("command 'cp1-flags' sets ") and words in message, message
    assert message.endswith("(apiserver.extraFlags / masters[].extraFlags).")


def test_flag_policy_finds_the_aggregator_ca_in_another_cert_dir():
    """The requestheader CA flag names the aggregator CA even where certDir says something else."""
    props = apiserver_props({"cp1": {**flags(), "--client-ca-file": "/etc/kubernetes/pki/aggregator-ca.pem"}},
                            cert_dir="/srv/other")
    [message] = messages(ap.validate_no_dangerous_apiserver_flags,
                         resource_args(ap.APISERVER, "apiserver", props, DENIED))
    assert "aggregator (requestheader) CA" in message


def test_flag_policy_denies_what_the_config_lists():
    assert flag_messages({"--profiling": "true"}) == []
    [message] = flag_messages({"--profiling": "true"}, {"deniedFlags": ["--profiling"]})
    assert "sets --profiling, a flag the policy config lists in deniedFlags" in message
    assert flag_messages({"--token-auth-file": "/x"}, {}) == []  # the list is the config's


def test_flag_policy_reads_every_master_and_reports_each_once():
    """One record per master (its flags step runs them on create and update alike): each bad flag once."""
    props = apiserver_props({"cp1": {"--anonymous-auth": "true"}})
    assert len(messages(ap.validate_no_dangerous_apiserver_flags,
                        resource_args(ap.APISERVER, "apiserver", props, DENIED))) == 1
    only_second = apiserver_props({"cp1": {}, "cp2": {"--authorization-mode": "AlwaysAllow"}})
    [message] = messages(ap.validate_no_dangerous_apiserver_flags, resource_args(ap.APISERVER, "apiserver", only_second, DENIED))
    assert message.startswith("command 'cp2-flags' sets --authorization-mode=AlwaysAllow")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_program_s_own_extra_flags_reach_the_flag_policy(stack, ssh_private_key):
    """Through the program: extraFlags of the stack, as the pack sees them in ApiserverAggregation's masters."""
    # the prod example keeps kubeadm's aggregation (apiserver.manage: false): extraFlags need managed masters
    cert_dir = "/etc/kubernetes/ssl" if stack == "dev" else "/etc/kubernetes/pki/aggregator"
    managed = {"manage": True, "certDir": cert_dir}
    regs = _program_run(stack, ssh_private_key, apiserver={
        **managed, "extraFlags": {"--anonymous-auth": True, "--authorization-mode": "Node,AlwaysAllow"}})
    found = _evaluate(regs, f"{stack}.json")
    assert set(found) == {"no-dangerous-apiserver-flags"}, found
    assert len(found["no-dangerous-apiserver-flags"]) == 6  # two flags on each of 3 masters' flags steps
    regs = _program_run(stack, ssh_private_key,
                        apiserver={**managed, "extraFlags": {"--client-ca-file": f"{cert_dir}/aggregator-ca.pem"}})
    assert len(_evaluate(regs, f"{stack}.json")["no-dangerous-apiserver-flags"]) == 3


# --- the pack --------------------------------------------------------------------------------------


def test_every_policy_is_wired_and_mandatory():
    policies = ap.build_policies()
    assert [p.name for p in policies] == list(ap.CONFIG_KEYS)
    assert all(p.enforcement_level.value == "mandatory" for p in policies)
    # Through the policy objects, as the analyzer calls them: the bad stack trips both stack policies.
    ca = {"isCaCertificate": True, "subject": {"commonName": "kubernetes"}, "certPem": CLUSTER_CA}
    bad = stack_args(good_stack(ca=ca, apiserver=apiserver_props({"cp1": flags("nobody")})), PROD)
    found = []
    for p in policies:
        if isinstance(p, StackValidationPolicy):
            p.validate(bad, lambda m, u=None, name=p.name: found.append(name))
    assert found == ["aggregator-ca-not-cluster-ca", "proxy-client-cert-accepted"]


def test_committed_pack_configs_are_the_generator_output():
    for stack, production in (("prod", True), ("dev", False), ("sandbox", False)):
        committed = json.loads((POLICY_DIR / "config" / f"{stack}.json").read_text())
        assert committed == ap.pack_config(production=production, max_leaf_validity_hours=8760)
    prod = json.loads((POLICY_DIR / "config" / "prod.json").read_text())
    assert prod["host-keys-pinned-in-production"] == {"enforcementLevel": "mandatory", "production": True}
    assert "production" not in prod["strong-keys"]


def test_main_only_wires_the_pack():
    text = (POLICY_DIR / "__main__.py").read_text()
    assert "PolicyPack(" in text and "build_policies()" in text
    assert "def validate" not in text


def test_the_real_pack_serves_the_analyzer_protocol():
    """Start policy/__main__.py as the CLI does, ask for its policies, and analyze a weak key."""
    import grpc
    from google.protobuf import empty_pb2, struct_pb2
    from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

    proc = subprocess.Popen(
        [sys.executable, "-u", str(POLICY_DIR / "__main__.py")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=POLICY_DIR,
        env={k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
    )
    try:
        port = proc.stdout.readline().strip()
        assert port.isdigit(), proc.stderr.read() if proc.poll() is not None else port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
            assert info.name == ap.PACK_NAME
            assert sorted(p.name for p in info.policies) == sorted(ap.CONFIG_KEYS)
            props = struct_pb2.Struct()
            props.update({"algorithm": "RSA", "rsaBits": 1024})
            response = stub.Analyze(
                analyzer_pb2.AnalyzeRequest(
                    type=ap.PRIVATE_KEY, properties=props, urn=urn(ap.PRIVATE_KEY, "weak"), name="weak"
                ),
                timeout=30,
            )
            [diagnostic] = response.diagnostics
            assert diagnostic.policyName == "strong-keys"
            assert "is RSA 1024 bits" in diagnostic.message
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --- on the program's own resources (tests/support/program.py runs it under mocks) -----------------


# The prod example keeps kubeadm's aggregation (apiserver.manage: false); the pack's certificate and flag
# policies are exercised on it as a stack whose masters this program configures.
PROD_MANAGED = {"manage": True, "certDir": "/etc/kubernetes/pki/aggregator"}


def _program_run(stack: str, ssh_private_key: str, mutate=None, **overrides):
    import yaml

    from tests.support.program import run as run_program

    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    cfg = {k.partition(":")[2]: v for k, v in data.items() if k.startswith("metrics-aggregation:")}
    cfg["ssh"]["privateKey"] = ssh_private_key
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return run_program(cfg, stack=stack).resources


def _evaluate(registrations, config_file: str, mutate=None) -> dict[str, list[str]]:
    """Every policy of the pack over the registered resources, as the engine would call them."""
    pack_config = json.loads((POLICY_DIR / "config" / config_file).read_text())
    regs = [(r.type, r.name, r.urn, dict(r.inputs), {**r.inputs, **(r.state or {})}) for r in registrations]
    if mutate:
        regs = [mutate(*reg) for reg in regs]
    found: dict[str, list[str]] = {}
    for policy in ap.build_policies():
        config = {k: v for k, v in pack_config[policy.name].items() if k != "enforcementLevel"}

        def report(message, urn=None, name=policy.name):
            found.setdefault(name, []).append(message)

        if isinstance(policy, StackValidationPolicy):
            resources = [
                PolicyResource(t, unknown_checking_proxy(json.loads(json.dumps(state))), u, n, opts(), None, None, [], {})
                for t, n, u, _, state in regs
            ]
            policy.validate(StackValidationArgs(resources, config), report)
        else:
            for t, n, u, inputs, _ in regs:
                args = ResourceValidationArgs(t, unknown_checking_proxy(json.loads(json.dumps(inputs))), u, n, opts(), None, config)
                policy.validate(args, report)
    return found


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_shipped_stacks_pass_the_pack(stack, ssh_private_key):
    assert _evaluate(_program_run(stack, ssh_private_key), f"{stack}.json") == {}


def test_a_bad_prod_stack_fails_with_each_policys_message(ssh_private_key):
    masters = yaml_masters_without_host_keys()
    regs = _program_run(
        "prod", ssh_private_key,
        masters=masters,
        pki={"caCommonName": "kubernetes", "certValidityHours": 17520},
        metricsServer={"kubeletInsecureTls": True, "kubeletCaCertPem": None},
        apiserver={**PROD_MANAGED, "extraFlags": {"--anonymous-auth": True}},
        ssh={"insecureSkipHostKeyCheck": True},  # config refuses unpinned masters otherwise
    )

    def mutate(t, n, u, inputs, state):
        # What config validation does not let through, done as a hand-edited program would.
        if t == ap.PRIVATE_KEY and n == "proxy-client-key":
            inputs = state = {"algorithm": "RSA", "rsaBits": 1024}
        if t == ap.LOCALLY_SIGNED_CERT and n == "proxy-client":
            state = {**state, "allowedUses": ["server_auth"]}
        if t == ap.CERT_REQUEST and n == "proxy-client":
            state = {**state, "subject": {**state["subject"], "commonName": "someone-else"}}
        if t == ap.API_SERVICE:
            inputs = {**inputs, "spec": {**inputs["spec"], "insecureSkipTLSVerify": True}}
        return t, n, u, inputs, state

    found = _evaluate(regs, "prod.json", mutate)
    assert set(found) == set(ap.CONFIG_KEYS), found
    text = {name: " | ".join(messages) for name, messages in found.items()}
    assert "is named 'kubernetes'" in text["aggregator-ca-not-cluster-ca"]
    assert "lacks client_auth" in text["proxy-client-cert-accepted"]
    assert "'someone-else' is not in --requestheader-allowed-names=front-proxy-client" in text["proxy-client-cert-accepted"]
    assert "runs with --kubelet-insecure-tls" in text["no-kubelet-insecure-tls-in-production"]
    assert "sets spec.insecureSkipTLSVerify" in text["no-insecure-skip-tls-verify-in-production"]
    assert "'proxy-client-key' is RSA 1024 bits" in text["strong-keys"]
    assert "'proxy-client' is valid for 17520 hours" in text["leaf-validity-bounded"]
    assert "without connection.hostKey" in text["host-keys-pinned-in-production"]
    assert len(found["host-keys-pinned-in-production"]) == 6  # certs + flags on each of 3 masters
    assert "sets --anonymous-auth=true" in text["no-dangerous-apiserver-flags"]


def yaml_masters_without_host_keys() -> list[dict]:
    import yaml

    data = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["metrics-aggregation:masters"]
    return [{k: v for k, v in m.items() if k != "hostKey"} for m in data]


def test_proxy_policy_ignores_a_stack_without_the_aggregation_layer():
    unrelated = [resource("kubernetes:apps/v1:Deployment", "web", {"spec": {}})]
    assert run(ap.validate_proxy_client_cert, stack_args(unrelated)) == []


# --- pki.existingCa: the CA is no resource of the stack, only the proxy cert's signer ---------------


def existing_ca_stack(ca_pem: str) -> list[PolicyResource]:
    """The resources of a stack with pki.existingCa: no SelfSignedCert for the aggregator CA."""
    cert = {"allowedUses": ["client_auth", "key_encipherment", "digital_signature"], "caCertPem": ca_pem,
            "validityPeriodHours": 8760}
    return [r for r in good_stack(cert=cert) if r.name != "aggregator-ca"]


def test_ca_policy_passes_on_an_existing_front_proxy_ca():
    stack = existing_ca_stack(make_ca("front-proxy-ca"))
    assert run(ap.validate_ca_not_cluster_ca, stack_args(stack, {"clusterCaCertPem": CLUSTER_CA})) == []
    assert run(ap.validate_ca_not_cluster_ca, stack_args(stack)) == []


def test_ca_policy_fails_when_the_existing_ca_is_the_cluster_ca():
    [(message, where)] = run(ap.validate_ca_not_cluster_ca,
                             stack_args(existing_ca_stack(CLUSTER_CA), {"clusterCaCertPem": CLUSTER_CA}))
    assert "certificate 'proxy-client' is signed by the cluster CA (caCertPem equals clusterCaCertPem)" in message
    assert where == urn(ap.LOCALLY_SIGNED_CERT, "proxy-client")


def test_ca_policy_fails_on_an_existing_ca_named_like_the_cluster_ca():
    [message] = messages(ap.validate_ca_not_cluster_ca, stack_args(existing_ca_stack(make_ca("kubernetes"))))
    assert message.startswith("certificate 'proxy-client' is signed by a CA named 'kubernetes', the name of the "
                              "cluster CA in kubeadm and most binary installs; give pki.existingCa the "
                              "aggregator/front-proxy CA")
    cluster = make_ca("my-cluster-ca")
    [message] = messages(ap.validate_ca_not_cluster_ca,
                         stack_args(existing_ca_stack(make_ca("my-cluster-ca")), {"clusterCaCertPem": cluster}))
    assert "is signed by a CA named 'my-cluster-ca', the cluster CA's common name (clusterCaCertPem)" in message


def test_ca_policy_reports_a_ca_of_the_stack_once():
    """The name of a CA the stack creates is reported on the CA, not again on what it signs."""
    ca_pem = make_ca("kubernetes")
    ca = {"isCaCertificate": True, "subject": {"commonName": "kubernetes"}, "certPem": ca_pem}
    cert = {"allowedUses": ["client_auth"], "caCertPem": ca_pem, "validityPeriodHours": 8760}
    found = run(ap.validate_ca_not_cluster_ca, stack_args(good_stack(ca=ca, cert=cert)))
    assert [w for _, w in found] == [urn(ap.SELF_SIGNED_CERT, "aggregator-ca")]


def _existing_ca_config(cn: str) -> dict:
    from tests.unit.test_existing_ca import make_ca as make_existing_ca

    ca = make_existing_ca(ec.generate_private_key(ec.SECP256R1()), cn=cn, form="sec1")
    return {"existingCa": ca.config()}


def test_the_prod_stack_with_an_existing_ca_passes_the_pack(ssh_private_key):
    regs = _program_run("prod", ssh_private_key, pki=_existing_ca_config("front-proxy-ca"))
    assert not any(r.type == ap.SELF_SIGNED_CERT and r.name == "aggregator-ca" for r in regs)
    assert _evaluate(regs, "prod.json") == {}


def test_the_prod_stack_with_an_existing_ca_named_kubernetes_fails_the_pack(ssh_private_key):
    regs = _program_run("prod", ssh_private_key, pki=_existing_ca_config("kubernetes"), apiserver=PROD_MANAGED)
    found = _evaluate(regs, "prod.json")
    assert list(found) == ["aggregator-ca-not-cluster-ca"]
    [message] = found["aggregator-ca-not-cluster-ca"]
    assert "certificate 'proxy-client' is signed by a CA named 'kubernetes'" in message


def test_flag_policies_skip_what_is_not_known_yet():
    """In a preview every value the program records is known; an unknown one is skipped, not guessed."""
    props = {"masters": [{"name": "cp1", "flagsStep": "cp1-flags", "certDir": "/etc/kubernetes/pki",
                          "flags": {"--anonymous-auth": UNKNOWN_STRING_VALUE}}]}
    assert messages(ap.validate_no_dangerous_apiserver_flags, resource_args(ap.APISERVER, "apiserver", props, DENIED)) == []
    assert messages(ap.validate_no_dangerous_apiserver_flags,
                    resource_args(ap.APISERVER, "apiserver", {"masters": UNKNOWN_STRING_VALUE}, DENIED)) == []
