"""tools/audit.py: the comparisons (expected vs found -> findings), the exit status, the output, the SSH
settings it derives from the stack, the repair plan from the state, the read-only probe (run here with
bash on temporary files) and its config/access errors (a stand-in `pulumi` on PATH)."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components import apiserver, config, contract, metrics_server
from tools import audit
from tools.audit import DRIFT, ERROR, OK, FileFacts, Finding

ROOT = Path(__file__).resolve().parents[2]


def _cert(cn: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    import datetime as dt

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pems() -> dict[str, object]:
    ca, _ = _cert("ca")
    cert, key = _cert("aggregator")
    other, _ = _cert("other")
    return {"ca": ca, "cert": cert, "key": key, "other": other}


def _files(ca: str, cert: str, **over: FileFacts) -> dict[str, FileFacts]:
    files = {
        contract.CA_CERT_FILE: FileFacts("file", "644", "0", "0", "root", "root", audit.sha256_hex(audit.written_pem(ca))),
        contract.PROXY_CERT_FILE: FileFacts("file", "644", "0", "0", "root", "root",
                                            audit.sha256_hex(audit.written_pem(cert))),
        contract.PROXY_KEY_FILE: FileFacts("file", "600", "0", "0", "root", "root"),
    }
    files.update(over)
    return files


def _drift(findings: list[Finding]) -> set[tuple[str, str, str]]:
    return {(f.target, f.object, f.check) for f in findings if f.status == DRIFT}


# --- flags ---------------------------------------------------------------------------------------------


def test_the_listing_keeps_the_last_occurrence_and_bare_flags():
    text = "--a\tb\n--enable-aggregator-routing\n--a\tc\nnoise\n"
    assert audit.parse_flag_listing(text) == {"--a": "c", "--enable-aggregator-routing": None}


def test_every_expected_flag_is_compared_and_only_differences_drift():
    expected = {"--x": "1", "--y": "2", "--enable-aggregator-routing": "true", "--z": "3"}
    found = {"--x": "1", "--y": "20", "--enable-aggregator-routing": None, "--other": "9"}
    findings = audit.compare_flags("master2", expected, found)
    assert [f.object for f in findings] == list(expected)
    by = {f.object: f for f in findings}
    assert by["--x"].status == OK and by["--enable-aggregator-routing"].status == OK  # bare means true
    assert (by["--y"].status, by["--y"].expected, by["--y"].found) == (DRIFT, "2", "20")
    assert (by["--z"].status, by["--z"].found) == (DRIFT, "(not set)")
    assert all(f.repair == audit.FLAGS_STEP and f.target == "master2" for f in findings)


def test_a_bare_flag_that_must_hold_a_value_drifts():
    [f] = audit.compare_flags("m", {"--a": "x"}, {"--a": None})
    assert (f.status, f.found) == (DRIFT, "(set without a value)")


def test_the_expected_flags_are_the_programs(stack_config):
    """What the audit expects on a master is exactly the flags step's (apiserver_flags for that master)."""
    s = config.parse(stack_config(masters=[{**m, "extraFlags": {"--v": "2"}} if m["name"] == "master2" else m
                                           for m in stack_config()["masters"]]))
    m2 = s.masters[1]
    listing = "".join(f"{k}\t{v}\n" for k, v in apiserver.apiserver_flags(s, s.masters[0]).items())
    findings = audit.compare_flags("master2", apiserver.apiserver_flags(s, m2), audit.parse_flag_listing(listing))
    assert _drift(findings) == {("master2", "--v", "flag value")}


# --- files ---------------------------------------------------------------------------------------------


def test_pem_as_install_certs_writes_it():
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
    assert audit.written_pem(pem) == (pem + "\n").encode()
    assert audit.written_pem(pem) == apiserver._pem_bundle(pem, "", "").split("\n\n")[0].encode() + b"\n"
    assert audit.written_pem(pem.replace("\n", "\r\n") + "\r\n") == (pem + "\n").encode()
    bundle = pem + "\n\n" + pem.replace("AAAA", "BBBB") + "\n"
    assert audit.written_pem(bundle) == (pem + "\n" + pem.replace("AAAA", "BBBB") + "\n").encode()


def test_matching_files_are_clean(pems):
    found = audit.compare_files("m1", _files(pems["ca"], pems["cert"]), ca_pem=pems["ca"], cert_pem=pems["cert"],
                                key_public_sha256=audit.public_key_sha256(pems["cert"]), key_owner=None)
    assert len(found) == 9 and all(f.status == OK for f in found), found


def test_a_replaced_ca_a_loose_key_and_a_foreign_owner_drift(pems):
    files = _files(pems["other"], pems["cert"],
                   **{contract.PROXY_KEY_FILE: FileFacts("file", "644", "0", "0", "root", "root"),
                      contract.PROXY_CERT_FILE: FileFacts("file", "644", "1000", "1000", "alice", "alice",
                                                          audit.sha256_hex(audit.written_pem(pems["cert"])))})
    found = audit.compare_files("m1", files, ca_pem=pems["ca"], cert_pem=pems["cert"],
                                key_public_sha256=audit.public_key_sha256(pems["cert"]), key_owner=None)
    assert _drift(found) == {("m1", contract.CA_CERT_FILE, "sha256 = state"), ("m1", contract.PROXY_KEY_FILE, "mode"),
                             ("m1", contract.PROXY_CERT_FILE, "owner")}
    assert all(f.repair == audit.CERTS_STEP for f in found if f.status == DRIFT)


def test_a_key_of_another_cert_drifts_and_no_openssl_is_an_error(pems):
    files = _files(pems["ca"], pems["cert"])
    other = audit.public_key_sha256(pems["other"])
    found = audit.compare_files("m1", files, ca_pem=pems["ca"], cert_pem=pems["cert"], key_public_sha256=other,
                                key_owner=None)
    assert _drift(found) == {("m1", contract.PROXY_KEY_FILE, "public key = the cert's")}
    found = audit.compare_files("m1", files, ca_pem=pems["ca"], cert_pem=pems["cert"], key_public_sha256=None,
                                key_owner=None)
    assert [f.check for f in found if f.status == ERROR] == ["public key = the cert's"]


def test_the_key_owner_is_apiserver_key_owner_by_name_or_id(pems):
    key = FileFacts("file", "600", "998", "997", "kube", "kube")
    files = _files(pems["ca"], pems["cert"], **{contract.PROXY_KEY_FILE: key})
    pub = audit.public_key_sha256(pems["cert"])
    for owner, ok in (("kube:kube", True), ("998:997", True), ("kube:997", True), (None, False), ("kube:root", False)):
        found = audit.compare_files("m", files, ca_pem=pems["ca"], cert_pem=pems["cert"], key_public_sha256=pub,
                                    key_owner=owner)
        [f] = [f for f in found if f.object == contract.PROXY_KEY_FILE and f.check == "owner"]
        assert (f.status == OK) is ok, (owner, f)


def test_files_are_expected_owned_by_the_user_install_certs_runs_as(pems):
    """ssh.user alice without sudo: install-certs runs as alice and writes every file as alice:<her group>;
    the key is apiserver.keyOwner's when that is set; as root (or through sudo): root:root."""
    alice = audit.Writer("1000", "1001", "alice", "staff")
    pub = audit.public_key_sha256(pems["cert"])
    mine = {n: FileFacts("file", f.mode, "1000", "1001", "alice", "staff", f.sha256)
            for n, f in _files(pems["ca"], pems["cert"]).items()}
    found = audit.compare_files("m", mine, ca_pem=pems["ca"], cert_pem=pems["cert"], key_public_sha256=pub,
                                key_owner=None, writer=alice)
    assert all(f.status == OK for f in found), found
    assert {f.expected for f in found if f.check == "owner"} == {"alice:staff"}
    found = audit.compare_files("m", _files(pems["ca"], pems["cert"]), ca_pem=pems["ca"], cert_pem=pems["cert"],
                                key_public_sha256=pub, key_owner="root:root", writer=alice)
    assert _drift(found) == {("m", contract.CA_CERT_FILE, "owner"), ("m", contract.PROXY_CERT_FILE, "owner")}
    # ids without names (a uid with no passwd entry): compared by number
    nameless = audit.Writer("1000", "1001", "1000", "1001")
    found = audit.compare_files("m", mine, ca_pem=pems["ca"], cert_pem=pems["cert"], key_public_sha256=pub,
                                key_owner=None, writer=nameless)
    assert all(f.status == OK for f in found), found
    found = audit.compare_files("m", mine, ca_pem=pems["ca"], cert_pem=pems["cert"], key_public_sha256=pub,
                                key_owner=None, writer=audit.ROOT_WRITER)
    assert {f.object for f in found if f.status == DRIFT} == set(contract.PEM_FILES)
    # the probe could not tell who it runs as: the owners cannot be checked
    found = audit.compare_files("m", mine, ca_pem=pems["ca"], cert_pem=pems["cert"], key_public_sha256=pub,
                                key_owner=None, writer=None)
    assert [f.object for f in found if f.status == ERROR] == list(contract.PEM_FILES)


def test_probe_error_lines_are_errors_never_drift(pems):
    text = (f"@file {contract.CA_CERT_FILE} error stat cannot read its mode and owner\n"
            f"@file {contract.PROXY_CERT_FILE} file 644 0 0\n"  # cut short
            f"@file {contract.PROXY_KEY_FILE} file 600 0 0 root root -\n"
            "@pub error openssl pkey cannot read the key\n@id 0 0 root root\n@readyz 200\n")
    r = audit.parse_probe(text)
    assert r.files[contract.CA_CERT_FILE] == FileFacts("error", error="stat cannot read its mode and owner")
    assert r.files[contract.PROXY_CERT_FILE].state == "error" and r.key_public_error and r.key_public_sha256 is None
    assert r.writer == audit.ROOT_WRITER
    found = audit.compare_files("m", r.files, ca_pem=pems["ca"], cert_pem=pems["cert"], key_public_sha256=None,
                                key_owner=None, writer=r.writer, key_public_error=r.key_public_error)
    assert not _drift(found) and audit.exit_code(found) == audit.EXIT_ERROR
    assert {f.object for f in found if f.status == ERROR} == set(contract.PEM_FILES)


def test_missing_or_linked_files_drift(pems):
    files = _files(pems["ca"], pems["cert"], **{contract.CA_CERT_FILE: FileFacts("symlink")})
    del files[contract.PROXY_CERT_FILE]
    found = audit.compare_files("m", files, ca_pem=pems["ca"], cert_pem=pems["cert"],
                                key_public_sha256=audit.public_key_sha256(pems["cert"]), key_owner=None)
    assert {(f.object, f.found) for f in found if f.status == DRIFT} == {
        (contract.CA_CERT_FILE, "symlink"), (contract.PROXY_CERT_FILE, "missing")}


def test_readyz():
    assert audit.compare_readyz("m", "u", "200").status == OK
    f = audit.compare_readyz("m", "u", "000")
    assert (f.status, f.found, f.repair) == (DRIFT, "no answer", "")
    assert audit.compare_readyz("m", "u", "500").found == "HTTP 500"


# --- cluster -------------------------------------------------------------------------------------------


def _api_service(ca_pem: str, available: str = "True") -> dict:
    return {"spec": {"caBundle": base64.b64encode(ca_pem.encode()).decode()},
            "status": {"conditions": [{"type": "Available", "status": available, "reason": "FailedDiscoveryCheck"}]}}


def test_api_service(pems):
    name = contract.METRICS_API_SERVICE
    assert all(f.status == OK for f in audit.compare_api_service(name, _api_service(pems["ca"]), pems["ca"]))
    found = audit.compare_api_service(name, _api_service(pems["other"], "False"), pems["ca"])
    assert {f.check for f in found if f.status == DRIFT} == {"Available", "caBundle = metricsServerServingCaCertPem"}
    assert next(f for f in found if f.check == "Available").found == "False (FailedDiscoveryCheck)"
    [f] = audit.compare_api_service(name, None, pems["ca"])
    assert (f.status, f.found) == (DRIFT, "(not found)")


def test_deployment_args_and_image_are_the_programs(stack_config):
    ms = config.parse(stack_config()).metrics_server
    image, args = metrics_server.image(ms), metrics_server.container_args(ms)
    obj = {"spec": {"template": {"spec": {"containers": [{"name": "metrics-server", "image": image, "args": args}]}}}}
    assert all(f.status == OK for f in audit.compare_deployment("kube-system", "metrics-server", obj, image, args))
    c = obj["spec"]["template"]["spec"]["containers"][0]
    c["args"] = [*args, "--kubelet-insecure-tls"]
    c["image"] = "example.invalid/metrics-server:v0"
    found = audit.compare_deployment("kube-system", "metrics-server", obj, image, args)
    assert {f.check for f in found if f.status == DRIFT} == {"image", "args"}
    assert all(f.repair == audit.CLUSTER_UP for f in found)


# --- exit status and output ----------------------------------------------------------------------------


def test_exit_status():
    ok, drift, err = (Finding("m", "o", "c", "e", "f", s) for s in (OK, DRIFT, ERROR))
    assert audit.exit_code([ok]) == 0
    assert audit.exit_code([ok, drift]) == 1
    assert audit.exit_code([ok, drift, err]) == 2  # incomplete: something could not be checked
    assert audit.exit_code([]) == 0


def test_table_and_json_name_the_master_and_the_flag():
    findings = [Finding("master1", "--a", "flag value", "x", "x", OK),
                Finding("master2", "--a", "flag value", "x", "(not set)", DRIFT, "flags")]
    table = audit.render_table(findings)
    rows = table.splitlines()
    assert rows[0].split() == ["MASTER/OBJECT", "CHECK", "EXPECTED", "FOUND", "RESULT"]
    assert rows[2].startswith("master2 --a") and rows[2].endswith("DRIFT") and "(not set)" in rows[2]
    assert rows[-1] == "2 checks: 1 OK, 1 DRIFT, 0 ERROR"
    doc = json.loads(audit.to_json("dev", findings, 1.23456))
    assert doc["exitCode"] == 1 and doc["clean"] is False and doc["drift"] == ["master2"] and doc["seconds"] == 1.235
    assert doc["findings"][1] == {"target": "master2", "object": "--a", "check": "flag value", "expected": "x",
                                  "found": "(not set)", "status": "DRIFT", "repair": "flags"}


def test_long_cells_are_cut_in_the_table_only():
    long = "y" * 200
    table = audit.render_table([Finding("m", "o", "c", long, long, OK)])
    assert long not in table and "…" in table
    assert json.loads(audit.to_json("s", [Finding("m", "o", "c", long, long, OK)], 0))["findings"][0]["found"] == long


# --- SSH settings --------------------------------------------------------------------------------------


def test_ssh_config_pins_host_keys_and_uses_the_stack_settings(stack_config):
    s = config.parse(stack_config(masters=[{**m, "port": 2222} if m["name"] == "master3" else m
                                           for m in stack_config()["masters"]], ssh={"user": "ops"}))
    kh = audit.known_hosts(s)
    assert kh.splitlines()[0] == f"audit-master1 {' '.join(s.masters[0].host_key.split()[:2])}"
    text = audit.ssh_config(s, key_file="/k", bastion_key_file=None, known_hosts_file="/kh")
    block = text.split("Host audit-master3\n")[1].split("Host ")[0]
    for line in ("HostName 198.18.0.12", "Port 2222", "User ops", "HostKeyAlias audit-master3", "BatchMode yes",
                 "StrictHostKeyChecking yes", "UserKnownHostsFile /kh", "IdentityFile /k", "IdentitiesOnly yes",
                 "IdentityAgent none", f"ConnectTimeout {s.ssh.per_dial_timeout}"):
        assert f"  {line}\n" in block, line
    assert "ProxyJump" not in text


def test_ssh_config_jumps_through_the_bastion_and_names_unpinned_hosts(stack_config):
    cfg = stack_config(ssh={"bastion": {"host": "198.18.0.99", "user": "jump"}, "insecureSkipHostKeyCheck": True,
                            "agentSocketPath": "/run/agent.sock"})
    s = config.parse(cfg)
    text = audit.ssh_config(s, key_file="/k", bastion_key_file="/bk", known_hosts_file="/kh")
    bastion = text.split("Host audit-bastion\n")[1].split("Host ")[0]
    assert "  User jump\n" in bastion and "  IdentityFile /bk\n" in bastion and "  StrictHostKeyChecking no\n" in bastion
    assert "  IdentityAgent /run/agent.sock\n" in bastion
    for m in s.masters:
        assert "  ProxyJump audit-bastion\n" in text.split(f"Host audit-{m.name}\n")[1].split("Host ")[0]


def test_sudo_wraps_the_probe(stack_config):
    s = config.parse(stack_config(ssh={"sudo": True}))
    cmd = audit.probe_command(s, s.masters[0])
    assert cmd.startswith("sudo -n bash -s -- /etc/kubernetes/kube-apiserver.conf env-file kube-apiserver ")
    assert audit.probe_command(config.parse(stack_config()), s.masters[0]).startswith("bash -s -- ")


def test_a_key_passphrase_goes_to_askpass_through_a_private_file(stack_config, tmp_path):
    """ssh.privateKeyPassword: no BatchMode (it would refuse the key), ssh's askpass reads the passphrase
    from a 0600 file in the private dir, which is gone after close; password logins stay off."""
    s = config.parse(stack_config(ssh={"privateKeyPassword": "pw-unit"}))
    text = audit.ssh_config(s, key_file="/k", bastion_key_file=None, known_hosts_file="/kh")
    assert "  BatchMode no\n" in text and "  PasswordAuthentication no\n" in text
    assert "  BatchMode yes\n" in audit.ssh_config(config.parse(stack_config()), key_file="/k", bastion_key_file=None,
                                                   known_hosts_file="/kh")
    with audit.Ssh(s, lambda m: None) as ssh:
        askpass = ssh.env["SSH_ASKPASS"]
        assert ssh.env["SSH_ASKPASS_REQUIRE"] == "force" and "pw-unit" not in json.dumps(ssh.env)
        assert subprocess.run([askpass], capture_output=True, text=True).stdout == "pw-unit"
        private = Path(askpass).parent
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in private.iterdir()} == {
            "key": 0o600, "passphrase": 0o600, "askpass": 0o700, "known_hosts": 0o600, "config": 0o600}
    assert not private.exists()


# --- the state and the repair plan ---------------------------------------------------------------------


def _secret(value: str) -> dict:
    return {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "plaintext": json.dumps(value)}


def _export() -> dict:
    comp = f"urn:pulumi:dev::metrics-aggregation::{contract.APISERVER_TYPE}$command:remote:Command::"
    res = [{"urn": f"{comp}{m}-{k}", "type": "command:remote:Command",
            "inputs": {"create": f"create {m} {k}", **({"stdin": _secret(f"stdin {m}")} if k == "certs" else {})}}
           for m in ("master1", "master2") for k in ("certs", "flags")]
    res.append({"urn": "urn:pulumi:dev::metrics-aggregation::command:remote:Command::master1-flags",
                "type": "command:remote:Command", "inputs": {"create": "not ours"}})
    res.append({"urn": "urn:pulumi:dev::metrics-aggregation::metrics-aggregation:k8s:MetricsServer$"
                       "kubernetes:apps/v1:Deployment::metrics-server-deployment",
                "type": "kubernetes:apps/v1:Deployment", "inputs": {}})
    return {"deployment": {"resources": res}}


def test_stored_steps_are_the_apiserver_components_own():
    steps = audit.stored_steps(_export(), ["master1", "master2"])
    assert steps[("master2", "certs")].create == "create master2 certs"
    assert steps[("master2", "certs")].stdin == "stdin master2"
    assert steps[("master1", "flags")].create == "create master1 flags"  # not the unparented one
    assert steps[("master1", "flags")].stdin is None


def test_the_plan_reruns_certs_then_flags_of_drifted_masters_in_rollout_order():
    findings = [Finding("master3", "--a", "flag value", "x", "y", DRIFT, "flags"),
                Finding("master1", contract.PROXY_KEY_FILE, "mode", "600", "644", DRIFT, "certs"),
                Finding("master2", "kube-apiserver", "ready", "HTTP 200", "no answer", DRIFT),
                Finding("master2", "--a", "flag value", "x", "x", OK, "flags")]
    assert audit.repair_plan(findings, ["master1", "master2", "master3"]) == [
        ("master1", "certs"), ("master1", "flags"), ("master3", "certs"), ("master3", "flags")]
    cluster = [Finding("cluster", "Deployment kube-system/metrics-server", "args", "a", "b", DRIFT, "up")]
    assert audit.repair_plan(cluster, ["master1"]) == [("cluster", "up")]
    assert audit.cluster_targets(_export(), cluster) == [_export()["deployment"]["resources"][-1]["urn"]]
    assert audit.repair_plan([], ["master1"]) == []


def test_after_a_repair_the_apiservice_is_awaited_bounded():
    answers = iter([None, _api_service("x", "False"), _api_service("x", "True")])
    seen: list[str] = []
    assert audit.wait_available(lambda path: seen.append(path) or next(answers), "v1beta1.metrics.k8s.io", print,
                                timeout=5, interval=0.01)
    assert seen == ["/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io"] * 3
    logs: list[str] = []
    assert not audit.wait_available(lambda path: _api_service("x", "False"), "v", logs.append, timeout=0.05,
                                    interval=0.01)
    assert logs == ["repair: APIService v is still not Available after 0s"]


# --- the probe, run here: what it reports and that it writes nothing ------------------------------------


def _cert_dir(tmp_path: Path, pems: dict) -> Path:
    cert_dir = tmp_path / "ssl"
    cert_dir.mkdir()
    (cert_dir / contract.CA_CERT_FILE).write_text(pems["ca"])
    (cert_dir / contract.PROXY_CERT_FILE).write_text(pems["cert"])
    (cert_dir / contract.PROXY_KEY_FILE).write_bytes(_key_pem(pems["key"]))
    os.chmod(cert_dir / contract.PROXY_KEY_FILE, 0o600)
    return cert_dir


def test_the_probe_reports_and_writes_nothing(tmp_path, pems):
    cert_dir = _cert_dir(tmp_path, pems)
    conf = tmp_path / "kube-apiserver.conf"
    conf.write_text('KUBE_APISERVER_OPTS="--a=b \\\n--enable-aggregator-routing \\\n--a=c"\n')
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    before = {p: p.stat() for p in tmp_path.rglob("*")}
    args = [str(conf), "env-file", "kube-apiserver", str(cert_dir), "http://127.0.0.1:9/readyz",
            contract.PROXY_KEY_FILE, *contract.PEM_FILES]
    p = subprocess.run(["bash", "-s", "--", *args], input=audit.probe_script(apiserver.editor_text()),
                       capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": str(scratch)})
    assert p.returncode == 0, p.stderr
    assert "PRIVATE KEY" not in p.stdout
    r = audit.parse_probe(p.stdout)
    assert r.flags == {"--a": "c", "--enable-aggregator-routing": None}
    assert r.files[contract.PROXY_KEY_FILE].mode == "600" and r.files[contract.PROXY_KEY_FILE].sha256 == ""
    assert r.files[contract.CA_CERT_FILE].sha256 == audit.sha256_hex(audit.written_pem(pems["ca"]))
    assert r.key_public_sha256 == audit.public_key_sha256(pems["cert"])
    assert r.readyz == "000"
    after = {p: p.stat() for p in tmp_path.rglob("*")}
    assert after.keys() == before.keys() and not any(scratch.iterdir())
    assert all(stat.S_IMODE(after[k].st_mode) == stat.S_IMODE(v.st_mode) and after[k].st_mtime_ns == v.st_mtime_ns
               for k, v in before.items())


def _probe(cert_dir: Path, path: str | None = None) -> audit.ProbeResult:
    args = [str(cert_dir / "none.conf"), "env-file", "kube-apiserver", str(cert_dir), "http://127.0.0.1:9/readyz",
            contract.PROXY_KEY_FILE, *contract.PEM_FILES]
    p = subprocess.run(["bash", "-s", "--", *args], input=audit.probe_script(apiserver.editor_text()),
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": path or os.environ["PATH"]})
    assert p.returncode == 0, p.stderr
    return audit.parse_probe(p.stdout)


def test_the_probe_says_who_it_runs_as(tmp_path, pems):
    r = _probe(_cert_dir(tmp_path, pems))
    assert r.writer is not None and (r.writer.uid, r.writer.gid) == (str(os.getuid()), str(os.getgid()))


@pytest.mark.parametrize("failing", ["openssl", "stat", "sha256sum"])
def test_a_failing_command_in_the_probe_is_an_error_never_drift(tmp_path, pems, failing):
    """openssl failing on the key must not give the sha256 of empty input (a DRIFT no repair clears), nor a
    failing stat or sha256sum a short line read as "missing": each is an ERROR (exit 2)."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / failing).write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
    (shims / failing).chmod(0o755)
    r = _probe(_cert_dir(tmp_path, pems), f"{shims}{os.pathsep}{os.environ['PATH']}")
    found = audit.compare_files("m", r.files, ca_pem=pems["ca"], cert_pem=pems["cert"],
                                key_public_sha256=r.key_public_sha256, key_owner=None, writer=r.writer,
                                key_public_error=r.key_public_error)
    errors = {(f.object, f.check) for f in found if f.status == ERROR}
    assert errors and audit.exit_code(found) == audit.EXIT_ERROR
    assert not [f for f in found if f.status == DRIFT], found
    if failing == "openssl":
        assert errors == {(contract.PROXY_KEY_FILE, "public key = the cert's")}
    elif failing == "stat":
        assert errors == {(n, "readable") for n in contract.PEM_FILES}
    else:  # the key's public half goes through sha256sum too
        assert errors == {(n, "readable") for n in (contract.CA_CERT_FILE, contract.PROXY_CERT_FILE)} | {
            (contract.PROXY_KEY_FILE, "public key = the cert's")}


def test_the_probe_reports_an_unreadable_config(tmp_path):
    args = [str(tmp_path / "nope.conf"), "env-file", "kube-apiserver", str(tmp_path), "http://127.0.0.1:9/",
            contract.PROXY_KEY_FILE, *contract.PEM_FILES]
    p = subprocess.run(["bash", "-s", "--", *args], input=audit.probe_script(apiserver.editor_text()),
                       capture_output=True, text=True, timeout=60)
    r = audit.parse_probe(p.stdout)
    assert r.flags is None and "does not exist" in r.flags_error
    assert all(f.state == "missing" for f in r.files.values())


# --- errors: config and access (exit 2, the key named, no secret) --------------------------------------

FAKE_PULUMI = """#!{python}
import json, sys
args = sys.argv[1:]
if args[0] == "config":
    print(json.dumps({config}))
elif args[:2] == ["stack", "output"]:
    print(json.dumps({outputs}))
else:
    sys.exit(3)
"""


def _fake_pulumi_argv(tmp_path: Path, cfg: dict, outputs: dict, *args: str, ssh: str | None = None,
                      env: dict | None = None) -> tuple[list[str], dict]:
    """The audit's argv and env with a fake pulumi (and, given `ssh`, a fake ssh running that sh script)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pulumi"
    fake.write_text(FAKE_PULUMI.format(python=sys.executable, config=repr(cfg), outputs=repr(outputs)))
    fake.chmod(0o755)
    if ssh is not None:
        (bin_dir / "ssh").write_text(f"#!/bin/sh\n{ssh}\n")
        (bin_dir / "ssh").chmod(0o755)
    (tmp_path / "Pulumi.yaml").write_text("name: metrics-aggregation\nruntime: python\n")
    env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return [sys.executable, "-m", "tools.audit", "--stack", "dev", "--cwd", str(tmp_path), *args], env


def _run_with_fake_pulumi(tmp_path: Path, cfg: dict, outputs: dict, *args: str, **kw: object) -> subprocess.CompletedProcess:
    argv, env = _fake_pulumi_argv(tmp_path, cfg, outputs, *args, **kw)  # type: ignore[arg-type]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _outputs(pems: dict) -> dict:
    return {contract.OUTPUT_AGGREGATOR_CA_CERT_PEM: pems["ca"], contract.OUTPUT_PROXY_CLIENT_CERT_PEM: pems["cert"],
            contract.OUTPUT_METRICS_API_SERVICE: contract.METRICS_API_SERVICE,
            contract.OUTPUT_METRICS_SERVER_NAMESPACE: "kube-system"}


def _no_kubeconfig(tmp_path: Path) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "KUBECONFIG": ""}


def _pulumi_config(cfg: dict) -> dict:
    return {f"{contract.NAMESPACE}:{k}": {"value": json.dumps(v), "objectValue": v, "secret": k == "ssh"}
            for k, v in cfg.items()}


def test_a_bad_config_is_exit_2_naming_the_key_never_the_secret(tmp_path, stack_config):
    cfg = stack_config(ssh={"port": 0})
    p = _run_with_fake_pulumi(tmp_path, _pulumi_config(cfg), {})
    assert p.returncode == 2, p.stdout + p.stderr
    assert "ssh.port" in p.stderr
    assert "PRIVATE KEY" not in p.stdout + p.stderr


def test_a_stack_never_up_is_exit_2_saying_what_to_run(tmp_path, stack_config):
    p = _run_with_fake_pulumi(tmp_path, _pulumi_config(stack_config()), {})
    assert p.returncode == 2, p.stdout + p.stderr
    assert "aggregatorCaCertPem" in p.stderr and "make up STACK=dev" in p.stderr


def test_json_says_why_there_are_no_findings(tmp_path, stack_config):
    p = _run_with_fake_pulumi(tmp_path, _pulumi_config(stack_config()), {}, "--json")
    assert p.returncode == 2
    doc = json.loads(p.stdout)
    assert doc["exitCode"] == 2 and doc["findings"] == [] and "aggregatorCaCertPem" in doc["error"]


def test_ssh_failures_name_the_config_key_to_check():
    assert "masters[1].hostKey" in audit.ssh_hint("Host key verification failed.", 1, False)
    assert "ssh.privateKey" in audit.ssh_hint("root@x: Permission denied (publickey).", 0, False)
    assert "passwordless sudo" in audit.ssh_hint("sudo: a password is required", 0, True)
    assert "masters[2].address" in audit.ssh_hint("ssh: connect to host x port 22: Connection timed out", 2, False)
    assert audit.ssh_hint("something else", 0, False) == ""


def test_no_project_dir_is_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tools.audit", "--stack", "dev", "--cwd", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no Pulumi.yaml" in p.stderr


def test_the_probe_is_shellcheck_clean(tmp_path):
    script = tmp_path / "probe.sh"
    script.write_text("#!/usr/bin/env bash\n" + audit.probe_script("{ print }"))
    p = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


# --- the cluster's kubeconfig ----------------------------------------------------------------------------


def test_an_unusable_kubeconfig_still_audits_the_masters(tmp_path, stack_config, pems):
    """No kubeconfig (none configured, no KUBECONFIG, no ~/.kube/config): master rows as always, the
    cluster checks ERROR naming kubernetes:kubeconfig, exit 2 (incomplete)."""
    p = _run_with_fake_pulumi(tmp_path, _pulumi_config(stack_config(n_masters=2)), _outputs(pems), "--json",
                              ssh="echo '@readyz 200'", env=_no_kubeconfig(tmp_path))
    assert p.returncode == 2, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    masters = {f["target"] for f in doc["findings"]} - {audit.CLUSTER}
    assert len(masters) == 2 and any(f["check"].startswith("ready") and f["status"] == OK for f in doc["findings"])
    cluster = [f for f in doc["findings"] if f["target"] == audit.CLUSTER]
    assert len(cluster) == 2 and all(f["status"] == ERROR and "kubernetes:kubeconfig" in f["found"] for f in cluster)
    assert "kubernetes:kubeconfig" in p.stderr and "PRIVATE KEY" not in p.stdout + p.stderr


def test_inline_kubeconfig_is_never_joined_with_the_project_dir(tmp_path):
    inline = json.dumps({"apiVersion": "v1", "clusters": [], "contexts": [], "current-context": "x"})
    assert audit.kubeconfig_value(inline, tmp_path) == inline
    yaml_text = "apiVersion: v1\nclusters: []\n"
    assert audit.kubeconfig_value(yaml_text, tmp_path) == yaml_text
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "config").write_text(yaml_text)
    assert audit.kubeconfig_value("kube/config", tmp_path) == str(tmp_path / "kube" / "config")
    assert audit.kubeconfig_value(str(tmp_path / "kube" / "config"), Path("/nonexistent")) == str(
        tmp_path / "kube" / "config")
    assert audit.kubeconfig_value(None, tmp_path) is None


# --- the private key on disk: where, and gone on a signal ------------------------------------------------


def test_the_key_dir_goes_to_runner_temp_else_dev_shm(tmp_path):
    (tmp_path / "rt").mkdir()
    (tmp_path / "shm").mkdir()
    assert audit.secret_dir_base({"RUNNER_TEMP": str(tmp_path / "rt")}, str(tmp_path / "shm")) == str(tmp_path / "rt")
    assert audit.secret_dir_base({}, str(tmp_path / "shm")) == str(tmp_path / "shm")
    assert audit.secret_dir_base({}, str(tmp_path / "no-shm")) is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])  # a CI cancel or a timeout; a closed terminal
def test_a_signal_removes_the_key_dir(tmp_path, stack_config, pems, sig):

    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    started = tmp_path / "ssh-started"
    argv, env = _fake_pulumi_argv(tmp_path, _pulumi_config(stack_config(n_masters=2)), _outputs(pems), "--json",
                                  ssh=f"touch {started}; exec sleep 60",
                                  env={**_no_kubeconfig(tmp_path), "RUNNER_TEMP": str(runner_temp)})
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        [key_dir] = list(runner_temp.iterdir())  # blocked in the probes, the key on disk
        assert (key_dir / "key").is_file()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)  # the probes are ended too, not waited for (60 s)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert not key_dir.exists() and not any(runner_temp.iterdir())
    assert "PRIVATE KEY" not in out + err


# --- make audit / make repair ------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "components"), [("audit", "pulumi"),
                                                     ("repair", "pulumi python tls command kubernetes")])
def test_make_audit_prints_only_the_audits_output_and_builds_only_what_it_runs(tmp_path, target, components):
    """`make audit AUDIT_ARGS=--json > f.json` is the tool's JSON alone (no echoed recipe, the build's
    output on stderr), and the toolchain build asks only for the components the audit or repair runs.
    Run for real, with the toolchain script and the venv's python replaced by stand-ins."""
    shims, fake_bin, calls = tmp_path / "shims", tmp_path / "venv-bin", tmp_path / "calls"
    shims.mkdir()
    fake_bin.mkdir()
    # `bash toolchain/build.sh ...` reaches this bash first on PATH; every other bash is the real one
    (shims / "bash").write_text(f"""#!/bin/sh
if [ "$1" = toolchain/build.sh ]; then
    shift; echo "$*" >>{calls}
    [ "$1" = env ] || echo "toolchain noise on stdout"  # env's stdout is sourced
    exit 0
fi
exec /bin/bash "$@"
""")
    doc = '{"stack": "nosuch", "exitCode": 2, "findings": []}'
    (fake_bin / "python").write_text(f"#!/bin/sh\necho '{doc}'\necho \"$*\" >>{calls}\nexit 2\n")
    for f in (shims / "bash", fake_bin / "python"):
        f.chmod(0o755)
    p = subprocess.run(["make", "--no-print-directory", "-o", "venv/.installed", target, "STACK=nosuch",
                        "AUDIT_ARGS=--json", f"BIN={fake_bin}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"})
    assert p.returncode == 2, p.stderr
    assert json.loads(p.stdout) == json.loads(doc) and p.stdout.strip() == doc
    assert "toolchain noise" in p.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == f"build {components}" and lines[1] == "env"
    assert lines[2].startswith("-m tools.audit --stack nosuch") and ("--repair" in lines[2]) == (target == "repair")


def test_a_signal_during_a_repair_step_waits_for_the_step_to_end():
    """SIGTERM while a stored step or the targeted up runs: the step runs to its end (a killed `up` leaves
    pending operations, a killed apply half a change), then the audit exits 128+15."""
    sig = signal
    ran = []
    with pytest.raises(SystemExit) as e:
        with audit._Signals.deferred():
            audit._Signals.handle(sig.SIGTERM)
            ran.append("the rest of the step")
    assert ran == ["the rest of the step"] and e.value.code == 128 + sig.SIGTERM
    with pytest.raises(SystemExit):  # outside a step: at once
        audit._Signals.handle(sig.SIGHUP)
    assert audit._Signals.pending is None and audit._Signals.deferring is False


def test_after_close_no_ssh_is_started(stack_config, monkeypatch):
    """A signal while the probes start: close() runs in the main thread, and a probe thread that reaches
    run() afterwards must not start an ssh (it would keep the process alive until its timeout)."""
    s = config.parse(stack_config())
    ssh = audit.Ssh(s, lambda m: None)
    ssh.close()
    monkeypatch.setattr(audit.subprocess, "Popen", lambda *a, **k: pytest.fail("an ssh was started after close"))
    p = ssh.run(s.masters[0].name, "true", "", 5)
    assert p.returncode == 255 and "interrupted" in p.stderr
