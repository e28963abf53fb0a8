"""The drift audit on the sandbox (tools/audit.py, `make audit` / `make repair`): the real engine, SSH, masters
and cluster.

In order, on one stack: `up` -> the audit is clean (exit 0) and writes nothing on any master -> master2's
env file is rewritten without the aggregation flags (as `kubeadm upgrade` regenerates a config file) and its
apiserver restarted -> the audit exits 1 naming master2 and every managed flag (table and --json) -> the
repair re-runs master2's stored steps (one restart, master1 and master3 untouched) -> clean again. Then the
certificate files: master3's key made world-readable and its CA file replaced -> the audit names them ->
the repair (the certs step's stored stdin, from the state) puts them back without restarting anything.

The tool runs as `make audit` runs it: `python -m tools.audit --stack <stack>` in the toolchain's env with
the stack's backend (here the test stack's, and its project copy as --cwd).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components import contract
from sandbox.cluster import ENV_FILE, MASTERS
from tests.e2e import handmade as hm
from tests.e2e.engine import E2EStack, Project, Toolchain
from tests.e2e.sandboxes import earlier, running_sandbox, sandbox_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REVERTED = "master2"
CERTS_DRIFT = "master3"
SSL = "/etc/kubernetes/ssl"
# what the audit must leave alone, byte for byte and in mode and mtime (paths inside each master)
WATCHED = ("/etc/kubernetes", "/var/lib/metrics-aggregation")


@dataclass
class AuditScenario:
    sb: Any
    stack: E2EStack
    original: dict[str, bytes]  # master -> env file bytes before anything ran
    tmp: Path
    results: dict[str, Any] = field(default_factory=dict)

    def require(self, key: str) -> Any:
        return earlier(self.results, key)

    def audit(self, *args: str, timeout: float = 900) -> tuple[int, str, str, float]:
        return self.stack.audit(*args, timeout=timeout)


@pytest.fixture(scope="module")
def scenario(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditScenario]:
    tmp = tmp_path_factory.mktemp("audit")
    with running_sandbox(toolchain.bin_dir, tmp) as sb:
        original = {m: hm.host_path(sb, m, ENV_FILE).read_bytes() for m in MASTERS}
        stack = Project.copy(tmp / "project").stack(toolchain, tmp / "backend", "sandbox", sandbox_config(sb))
        try:
            yield AuditScenario(sb, stack, original, tmp)
        finally:
            (tmp / "engine-output.log").write_text("\n".join(stack.outputs))


def _tree(sb: Any) -> dict[str, tuple]:
    """Every file and directory under WATCHED on every master: mode, owner, size, mtime, sha256."""
    out: dict[str, tuple] = {}
    for m in MASTERS:
        for inside in WATCHED:
            root = hm.host_path(sb, m, inside)
            for p in [root, *sorted(root.rglob("*"))]:
                st = p.lstat()
                digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
                out[f"{m}:{p}"] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, digest)
    return out


def _findings(stdout: str) -> list[dict]:
    doc = json.loads(stdout)
    return doc["findings"]


# ------------------------------------------------------------------------------------------ cases
def test_after_up_the_audit_is_clean_and_writes_nothing(scenario):
    s = scenario
    result, _ = s.stack.up()
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    before = _tree(s.sb)
    rc, out, err, wall = s.audit()
    assert rc == 0, out + err
    assert _tree(s.sb) == before, "the audit changed a file on a master"
    for m in MASTERS:
        for flag in contract.MANAGED_FLAGS:
            assert any(line.startswith(f"{m} {flag} ") and line.rstrip().endswith("OK") for line in out.splitlines()), \
                f"no OK row for {m} {flag}:\n{out}"
    rc, out, err, _ = s.audit("--json")
    assert rc == 0, out + err
    doc = json.loads(out)
    assert doc["clean"] is True and doc["drift"] == []
    checked = {(f["target"], f["object"], f["check"]) for f in doc["findings"]}
    for m in MASTERS:
        assert (m, contract.CA_CERT_FILE, "sha256 = state") in checked
        assert (m, contract.PROXY_KEY_FILE, "public key = the cert's") in checked
        assert any(t == m and c.startswith("ready") for t, _, c in checked)
    assert ("cluster", f"APIService {contract.METRICS_API_SERVICE}", "caBundle = metricsServerServingCaCertPem") in checked
    assert any(o.startswith("Deployment ") and c == "args" for t, o, c in checked)
    # the figure for the record (docs/audit.md): the whole command and the probes themselves
    print(f"\naudit wall time, 3 masters: {wall:.2f}s for the command, {doc['seconds']:.2f}s for the checks")
    s.results["clean"] = True


def test_master2_reverted_by_hand_is_named_with_every_managed_flag(scenario):
    s = scenario
    s.require("clean")
    # `kubeadm upgrade` writes the config file anew from its own template: no aggregation flag in it
    hm.edit_env_file(s.sb, REVERTED, lambda _text: s.original[REVERTED].decode())
    hm.restart_apiserver(s.sb, REVERTED)
    rc, out, err, _ = s.audit()
    assert rc == 1, out + err
    for flag in contract.MANAGED_FLAGS:
        rows = [line for line in out.splitlines() if line.startswith(f"{REVERTED} {flag} ")]
        assert rows and "(not set)" in rows[0] and rows[0].rstrip().endswith("DRIFT"), f"{flag}:\n{out}"
    rc, out, err, _ = s.audit("--json")
    assert rc == 1, out + err
    doc = json.loads(out)
    assert doc["clean"] is False and REVERTED in doc["drift"]
    drifted = [f for f in doc["findings"] if f["status"] == "DRIFT" and f["target"] != "cluster"]
    assert {f["object"] for f in drifted} == set(contract.MANAGED_FLAGS), drifted
    assert all(f["target"] == REVERTED and f["found"] == "(not set)" for f in drifted)
    # master2's apiserver, now without the proxy-client cert, may already have marked the APIService
    # unavailable (every apiserver's availability controller writes its status): the only other drift allowed
    cluster = {f["check"] for f in doc["findings"] if f["status"] == "DRIFT" and f["target"] == "cluster"}
    assert cluster <= {"Available"}, cluster
    s.results["reverted"] = True


def test_repair_reapplies_master2_only_and_the_audit_is_clean_again(scenario):
    s = scenario
    s.require("reverted")
    generations = hm.generations(s.sb)
    rc, out, err, _ = s.audit("--repair")
    assert rc == 0, out + err
    assert f"re-running the stored create of {REVERTED}-flags" in err, err
    assert "PRIVATE KEY" not in out + err
    after = hm.generations(s.sb)
    assert after[REVERTED] == generations[REVERTED] + 1, (generations, after)  # the one restart of apply
    assert {m: after[m] for m in MASTERS if m != REVERTED} == {m: generations[m] for m in MASTERS if m != REVERTED}
    text = hm.host_path(s.sb, REVERTED, ENV_FILE).read_text()
    assert f"{contract.REQUESTHEADER_CLIENT_CA_FILE}={SSL}/{contract.CA_CERT_FILE}" in text
    rc, out, err, _ = s.audit()
    assert rc == 0, out + err
    s.results["repaired"] = True


def test_certificate_file_drift_is_named_and_repaired_from_the_state_without_a_restart(scenario):
    s = scenario
    s.require("repaired")
    key = hm.host_path(s.sb, CERTS_DRIFT, f"{SSL}/{contract.PROXY_KEY_FILE}")
    ca = hm.host_path(s.sb, CERTS_DRIFT, f"{SSL}/{contract.CA_CERT_FILE}")
    ca_bytes = ca.read_bytes()
    os.chmod(key, 0o644)
    ca.write_bytes(hm.guide_bundle().ca_cert_pem)  # someone's other CA in its place
    rc, out, err, _ = s.audit("--json")
    assert rc == 1, out + err
    drifted = {(f["target"], f["object"], f["check"]) for f in _findings(out) if f["status"] == "DRIFT"}
    assert drifted == {(CERTS_DRIFT, contract.PROXY_KEY_FILE, "mode"),
                       (CERTS_DRIFT, contract.CA_CERT_FILE, "sha256 = state")}, drifted
    generations = hm.generations(s.sb)
    rc, out, err, _ = s.audit("--repair")
    assert rc == 0, out + err
    assert "PRIVATE KEY" not in out + err
    assert ca.read_bytes() == ca_bytes and (key.stat().st_mode & 0o777) == 0o600
    assert hm.generations(s.sb) == generations  # files only: the apiserver reloads them, nothing restarted


def test_a_drifted_metrics_server_image_is_named_and_repaired_by_a_targeted_refresh_up(scenario):
    """Someone sets another image on the Deployment (kubectl set image): the audit names it; the repair's
    `pulumi up --refresh --target <the Deployment>` puts the program's image back, touching no master."""
    s = scenario
    s.require("repaired")
    hm.kubectl(s.sb, "-n", "kube-system", "set", "image", "deployment/metrics-server",
               "metrics-server=registry.k8s.io/metrics-server/metrics-server:v0.0.1")
    rc, out, err, _ = s.audit("--json")
    assert rc == 1, out + err
    drifted = {(f["target"], f["object"], f["check"]) for f in _findings(out) if f["status"] == "DRIFT"}
    assert drifted == {("cluster", "Deployment kube-system/metrics-server", "image")}, drifted
    generations = hm.generations(s.sb)
    rc, out, err, _ = s.audit("--repair", "--json")
    assert rc == 0, out + err
    assert "pulumi up --refresh --target" in err and "Deployment::" in err, err[-3000:]
    assert json.loads(out)["clean"] is True  # stdout is the audit's JSON alone, the up's output on stderr
    assert hm.generations(s.sb) == generations
