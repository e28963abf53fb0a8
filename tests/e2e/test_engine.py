"""Engine tier: the real Pulumi engine (the built CLI, Python language host, tls/command/kubernetes
providers) runs the program through `pulumi.automation` against three SSH test hosts (one per layout:
env-file, systemd-unit, static-pod) and a local etcd + kube-apiserver.

The cases run in order on one stack (module-scoped scenario): up -> second preview -> one master's
change previewed -> secrets in state and output -> destroy. Every case asserts on the hosts' real
files and the stand-in apiserver's restart timeline, read through the lab's host dirs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from pulumi import automation as auto

from components import contract
from components.apiserver import apiserver_flags
from components.metrics_server import SERVING_SECRET_NAME
from components.rfc3339 import parse_time
from tests.e2e.conftest import consumer_reads_outputs
from tests.e2e.engine import PRIVATE_KEY_RE, PROJECT, step_ops

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CERT_FILES = {"aggregator-ca.pem": 0o644, "aggregator.pem": 0o644, "aggregator-key.pem": 0o600}


def _openssl(*args: str) -> str:
    p = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"openssl {' '.join(args)}: {p.stderr}"
    return p.stdout


def _pem_body(pem: str) -> str:
    """The base64 body of a PEM block, one string (what a leak would contain, however wrapped)."""
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


PEM_PRIVATE_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----\n?", re.S)


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def _private_keys(obj) -> list[str]:
    """Every PEM private key in a decrypted state export (any depth)."""
    # `--show-secrets` gives a secret as {"plaintext": <its JSON encoding>}: newlines arrive as \\n
    return [k for t in _strings(obj) for k in PEM_PRIVATE_BLOCK.findall(t.replace("\\n", "\n"))]


# ------------------------------------------------------------------------------------------ cases
def test_up_creates_certs_flags_and_rolls_one_master_at_a_time(scenario):
    s = scenario
    t0 = time.time()
    result, took = s.stack.up()
    s.times["up"] = took
    s.results["up"] = result
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    outputs = {k: v.value for k, v in result.outputs.items()}
    s.results["outputs"] = outputs
    settings = s.settings()

    # files on every master: same bytes everywhere, modes, owner, the outputs' certificates
    ca_pem, cert_pem = outputs["aggregatorCaCertPem"], outputs["proxyClientCertPem"]
    for h in s.hosts:
        d = s.cert_dir(h)
        for name, mode in CERT_FILES.items():
            st = os.stat(h.path(f"{d}/{name}"))
            assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, 0, 0), f"{h.name}: {d}/{name}"
        assert h.path(f"{d}/aggregator-ca.pem").read_text() == ca_pem, h.name
        assert h.path(f"{d}/aggregator.pem").read_text() == cert_pem, h.name
        assert sorted(p.name for p in h.path(d).iterdir()) == sorted(CERT_FILES), f"{h.name}: leftovers in {d}"

    # the chain and the certificate, checked by openssl on the files of the first master
    h1 = s.hosts[0]
    d1 = s.cert_dir(h1)
    ca_file, cert_file, key_file = (str(h1.path(f"{d1}/{n}")) for n in CERT_FILES)
    assert _openssl("verify", "-purpose", "sslclient", "-CAfile", ca_file, cert_file).strip() == f"{cert_file}: OK"
    text = _openssl("x509", "-in", cert_file, "-noout", "-text")
    eku = text.split("X509v3 Extended Key Usage:", 1)[1].splitlines()[1]
    assert "TLS Web Client Authentication" in eku, text
    san = text.split("X509v3 Subject Alternative Name:", 1)[1].splitlines()[1]
    for h in s.hosts:
        assert f"IP Address:{h.address}" in san, f"{h.name}'s address missing from SANs: {san}"
    for extra in ("IP Address:127.0.0.1", "DNS:kubernetes", "DNS:kubernetes.default"):
        assert extra in san, san
    assert f"CN={settings.pki.proxy_client_common_name}" in _openssl("x509", "-in", cert_file, "-noout", "-subject").replace(" ", "")
    ca_text = _openssl("x509", "-in", ca_file, "-noout", "-text")
    assert "CA:TRUE" in ca_text
    # the key file belongs to the certificate
    assert _openssl("pkey", "-in", key_file, "-pubout") == _openssl("x509", "-in", cert_file, "-noout", "-pubkey")

    # flags: in every master's file exactly once, and the running stand-in apiserver started with them
    for h in s.hosts:
        flags = apiserver_flags(settings, s.master(h))
        args = h.config_args()
        for name, value in flags.items():
            hits = [a for a in args if a == name or a.startswith(name + "=")]
            assert hits == [f"{name}={value}"], f"{h.name}: {name}: {hits}"
        running = h.running_flags()
        for name, value in flags.items():
            assert running.get(name) == value, f"{h.name}: the running apiserver has {name}={running.get(name)!r}"
        assert h.readyz() == 200, h.name

    # rolling: every master restarted during `up`, in list order, never two down at once
    intervals = []
    for h in s.hosts:
        mine = [iv for iv in h.down_intervals() if iv[0] >= t0]
        assert mine, f"{h.name} was not restarted by up"
        intervals += [(a, b, h.name) for a, b in mine]
    intervals.sort()
    for (a1, b1, n1), (a2, _b2, n2) in zip(intervals, intervals[1:], strict=False):
        assert b1 <= a2, f"{n1} was down {a1:.3f}-{b1:.3f} while {n2} went down at {a2:.3f}"
    assert [n for _, _, n in intervals][: len(s.hosts)] == [h.name for h in s.hosts]

    # the kubernetes side is real too: the objects exist on the local apiserver
    assert s.cp.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io") is not None
    assert s.cp.get("/apis/apps/v1/namespaces/kube-system/deployments/metrics-server") is not None
    assert outputs["metricsApiService"] == "v1beta1.metrics.k8s.io"
    assert [m["name"] for m in outputs["masters"]] == [h.name for h in s.hosts]
    s.results["proxy_key_pem"] = Path(key_file).read_text()

    # contract 1.1.0: each *NotAfter, as the real providers write it, parses as RFC 3339 and is its
    # certificate's notAfter; the serving CA output verifies the certificate metrics-server serves
    assert outputs["contractVersion"] == contract.CONTRACT_VERSION
    secret = s.cp.get(f"/api/v1/namespaces/kube-system/secrets/{SERVING_SECRET_NAME}")
    serving_pem = base64.b64decode(secret["data"]["tls.crt"]).decode()
    certs = {
        "aggregatorCaNotAfter": ca_pem,
        "proxyClientCertNotAfter": cert_pem,
        "metricsServerServingCaNotAfter": outputs["metricsServerServingCaCertPem"],
        "metricsServerServingCertNotAfter": serving_pem,
    }
    for output, pem in certs.items():
        not_after = x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc
        # pulumi-tls writes the time with nanoseconds (MarshalText); the certificate holds whole seconds
        assert parse_time(outputs[output]).replace(microsecond=0) == not_after, \
            f"{output}={outputs[output]!r}, certificate: {not_after}"
    serving_ca_file, serving_file = s.tmp / "serving-ca.pem", s.tmp / "serving.pem"
    serving_ca_file.write_text(outputs["metricsServerServingCaCertPem"])
    serving_file.write_text(serving_pem)
    assert _openssl("verify", "-purpose", "sslserver", "-CAfile", str(serving_ca_file), str(serving_file)).strip() \
        == f"{serving_file}: OK"


def test_second_preview_reports_no_changes(scenario):
    s = scenario
    s.require("up")
    before = {h.name: h.config_bytes() for h in s.hosts}
    restarts = {h.name: h.restarts() for h in s.hosts}
    result, events, took = s.stack.preview()
    s.times["preview (no changes)"] = took
    assert set(result.change_summary) == {"same"}, f"{result.change_summary}\n{result.stdout[-3000:]}"
    ops = step_ops(events)
    assert ops and set(ops.values()) == {"same"}, {u: o for u, o in ops.items() if o != "same"}
    # preview never dials SSH: nothing changed on the hosts
    assert {h.name: h.config_bytes() for h in s.hosts} == before
    assert {h.name: h.restarts() for h in s.hosts} == restarts


def test_one_masters_change_touches_only_that_master(scenario):
    s = scenario
    s.require("up")
    target = s.hosts[1]
    saved = s.stack.config_file.read_text()
    masters = s.stack.read_config()[f"{PROJECT}:masters"]
    changed = [dict(m) for m in masters]
    changed[1]["port"] = 2222
    changed[1]["configPath"] = "/etc/systemd/system/kube-apiserver-alt.service"
    s.stack.write_config({f"{PROJECT}:masters": changed})
    try:
        result, events, took = s.stack.preview()
    finally:
        s.stack.config_file.write_text(saved)
    s.times["preview (one master changed)"] = took
    ops = step_ops(events)
    not_same = {u: o for u, o in ops.items() if o != "same"}
    mine = {f"{target.name}-certs", f"{target.name}-flags"}
    names = {u.rsplit("::", 1)[1]: o for u, o in not_same.items()}
    assert set(names) == mine, f"expected only {sorted(mine)} to change, got {names}"
    # updated in place: a replacement would run the old `delete` (revert) after the new `create`
    assert set(names.values()) == {"update"}, names
    assert result.change_summary.get("update") == 2, result.change_summary


CA_TYPES = ("tls:index/privateKey:PrivateKey", "tls:index/selfSignedCert:SelfSignedCert")


def test_ca_is_protected_and_a_ca_replacement_preview_is_refused_and_called_out(scenario):
    """pki.protectCa defaults to true: the state marks exactly the aggregator CA's key and certificate
    protected, and a config change that would replace the CA fails its `pulumi preview --json`, whose
    tools/preview_diff.py summary opens with the CA warning and the refusal (what the PR comment shows)."""
    from tools import preview_diff as pd

    s = scenario
    s.require("up")
    state = s.stack.stack.export_stack().deployment["resources"]
    protected = sorted(r["urn"].rsplit("::", 1)[1] for r in state if r.get("protect"))
    assert protected == ["aggregator-ca", "aggregator-ca-key"], protected
    for r in state:
        if r.get("protect"):
            assert r["type"] in CA_TYPES and f"{contract.AGGREGATOR_CA_TYPE}$" in r["urn"], r["urn"]

    saved = s.stack.config_file.read_text()
    before = {h.name: h.config_bytes() for h in s.hosts}
    s.stack.write_config({f"{PROJECT}:pki": {"caCommonName": "aggregator-ca-renamed"}})
    try:
        p = subprocess.run([str(s.stack.pulumi_bin), "preview", "--json", "--non-interactive", "--stack", s.stack.name],
                           cwd=s.stack.project.dir, env=s.stack.env, capture_output=True, text=True, timeout=150)
    finally:
        s.stack.config_file.write_text(saved)
    s.stack.outputs += ["==== preview --json (caCommonName changed)", p.stdout, p.stderr]  # leak-checked below
    assert p.returncode != 0, "a preview replacing the protected CA succeeded:\n" + p.stdout[-3000:]
    summary = pd.summarize(pd.load_digest(p.stdout))
    assert ("replace", "aggregator-ca") in summary.ca_ending, summary.ca_ending
    assert summary.ca_refused == ["aggregator-ca"], summary.diagnostics
    md = pd.render_markdown(summary)
    top = md.split("**Preview failed**")[0]
    assert "**This change replaces the aggregator CA**" in top and "The engine refused it" in top, md
    assert {h.name: h.config_bytes() for h in s.hosts} == before


def test_no_private_key_in_state_or_output(scenario):
    s = scenario
    s.require("up")
    # automation's export_stack runs `pulumi stack export --show-secrets`: the decrypted state, only
    # used here as the list of keys to look for
    decrypted = s.stack.stack.export_stack().deployment
    keys = _private_keys(decrypted)
    # the aggregator CA key, the proxy-client key, metrics-server's serving CA and leaf keys (+ the SSH key)
    assert len(keys) >= 4, f"expected the tls keys in the decrypted export, found {len(keys)}"
    proxy_key = s.require("proxy_key_pem")
    assert _pem_body(proxy_key) in {_pem_body(k) for k in keys}, [k[:120] for k in keys]
    bodies = {_pem_body(k) for k in keys} | {_pem_body(s.config["ssh"]["privateKey"])}
    # what a leak would look like: any 64-char line of a key body (PEM wraps at 64)
    needles = {b[i : i + 64] for b in bodies for i in range(0, len(b) - 64, 64)}
    # an RSA key's PEM holds its modulus, which certificates and public keys carry too: a chunk that
    # also occurs in the decrypted state outside the private keys is public material, not a leak
    public = "".join(
        PEM_PRIVATE_BLOCK.sub("", t.replace("\\n", "\n")).replace("\n", "") for t in _strings(decrypted)
    )
    needles = {n for n in needles if n not in public}
    assert len(needles) > 50, f"too few private-only key lines to search for ({len(needles)})"

    haystacks: dict[str, str] = {
        "pulumi stack export": s.stack.cli("stack", "export"),
        "stack outputs": json.dumps({k: v.value for k, v in s.stack.stack.outputs().items()}),
        "captured preview/up output": "\n".join(s.stack.outputs),
    }
    for f in s.stack.backend.rglob("*"):
        if f.is_file():
            haystacks[f"backend {f.relative_to(s.stack.backend)}"] = f.read_text(errors="replace")
    assert any(k.startswith("backend ") and k.endswith(".json") for k in haystacks), list(haystacks)
    for where, text in haystacks.items():
        m = PRIVATE_KEY_RE.search(text)
        assert not m, f"a PEM private key header in plaintext in {where}: ...{text[max(0, m.start() - 700):m.start() + 40]}"
        flat = text.replace("\\n", "").replace("\n", "")
        leaked = [n for n in needles if n in flat]
        if leaked:
            i = flat.index(leaked[0])
            raise AssertionError(f"{len(leaked)} lines of private key material in plaintext in {where}: "
                                 f"...{flat[max(0, i - 300):i + 100]}")


def test_consumer_project_reads_our_real_outputs(scenario, toolchain):
    """examples/hpa-consumer on the same backend: its StackReference reads this stack's real outputs, it
    checks the live APIService, and its Deployment + autoscaling/v2 HPA land in the cluster."""
    scenario.require("up")
    consumer_reads_outputs(scenario, toolchain)


@pytest.mark.timeout(360)  # + the refused destroy preview and the `up` that unprotects the CA
def test_destroy_restores_every_host(scenario):
    s = scenario
    s.require("up")
    t0 = time.time()
    before = {h.name: h.config_bytes() for h in s.hosts}
    # the default protects the CA: the destroy's preview stops at it, naming it, and changes nothing
    with pytest.raises(auto.CommandError) as refused:
        s.stack.stack.preview_destroy(color="never", on_output=s.stack.outputs.append)
    assert "cannot be deleted" in str(refused.value) and "because it is protected" in str(refused.value)
    assert "::aggregator-ca" in str(refused.value), str(refused.value)[-3000:]
    assert {h.name: h.config_bytes() for h in s.hosts} == before
    # docs/operations.md's way out: pki.protectCa false and `up` (no resource changes), then destroy
    s.stack.write_config({f"{PROJECT}:pki": {"protectCa": False}})
    unprotect, _ = s.stack.up()
    assert set(unprotect.summary.resource_changes or {}) == {"same"}, unprotect.summary.resource_changes
    assert {h.name: h.config_bytes() for h in s.hosts} == before
    assert not [r for r in s.stack.stack.export_stack().deployment["resources"] if r.get("protect")]
    result, took = s.stack.destroy()
    s.times["destroy"] = took
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    assert not PRIVATE_KEY_RE.search(result.stdout + result.stderr), "a private key in destroy's output"
    for h in s.hosts:
        assert h.config_bytes() == s.original[h.name], f"{h.name}: the config file is not back to its original bytes"
        d = s.cert_dir(h)
        left = [n for n in CERT_FILES if h.path(f"{d}/{n}").exists()]
        assert left == [], f"{h.name}: {left} left in {d}"
        scripts = h.path("/var/lib/metrics-aggregation/scripts")
        assert not (scripts.exists() and any(scripts.iterdir())), f"{h.name}: host script left behind"
        assert h.readyz() == 200, h.name
        running = h.running_flags()
        assert not any(k.startswith(("--requestheader-", "--proxy-client-")) for k in running), running
    intervals = sorted((a, b, h.name) for h in s.hosts for a, b in h.down_intervals() if a >= t0)
    for (_a1, b1, n1), (a2, _, n2) in zip(intervals, intervals[1:], strict=False):
        assert b1 <= a2, f"destroy: {n1} and {n2} were down at the same time"
    # reverse rollout order on destroy
    assert [n for _, _, n in intervals][: len(s.hosts)] == [h.name for h in reversed(s.hosts)]
    assert s.cp.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io") is None
    assert s.cp.get("/apis/apps/v1/namespaces/kube-system/deployments/metrics-server") is None
    print("\nengine tier wall times: " + ", ".join(f"{k} {v:.1f}s" for k, v in s.times.items()))
