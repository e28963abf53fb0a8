"""Contract tests of the tls stand-in (toolchain/adapters/cmd/pulumi-resource-tls) under the real engine:
the behaviours of the released pulumi-tls (which bridges terraform-provider-tls) that the program depends
on. Each test names the upstream file it follows.

A small tls-only program (a CA and a leaf it signs, no hosts) runs with the provider in a non-UTC zone
(TZ=America/Caracas, -04:00 all year); the last case previews the real program's graph after an
earlyRenewalHours change, on the engine tier's scenario (three SSH test hosts, a control plane).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509

from components import contract
from components.rfc3339 import parse_time
from tests.e2e.engine import LOCALLY_SIGNED_CERT_TYPE, PROJECT, E2EStack, Project, Toolchain, step_ops

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ZONE, OFFSET = "America/Caracas", "-04:00"
# time.Time.MarshalText: RFC 3339 with nanoseconds, trailing zeros dropped (no fraction on a whole second)
MARSHAL_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?(Z|[+-]\d\d:\d\d)")

PROGRAM = """
import pulumi
import pulumi_tls as tls

cfg = pulumi.Config()
ca_key = tls.PrivateKey("ca-key", algorithm="ED25519")
ca = tls.SelfSignedCert("ca", private_key_pem=ca_key.private_key_pem, subject={"common_name": "probe-ca"},
                        is_ca_certificate=True, allowed_uses=["cert_signing", "digital_signature"],
                        validity_period_hours=8760, early_renewal_hours=cfg.require_int("caEarlyRenewalHours"))
leaf_key = tls.PrivateKey("leaf-key", algorithm="ED25519")
csr = tls.CertRequest("leaf-csr", private_key_pem=leaf_key.private_key_pem, subject={"common_name": "probe-leaf"})
leaf = tls.LocallySignedCert("leaf", cert_request_pem=csr.cert_request_pem, ca_private_key_pem=ca_key.private_key_pem,
                             ca_cert_pem=ca.cert_pem, allowed_uses=["client_auth"], validity_period_hours=720,
                             early_renewal_hours=cfg.require_int("leafEarlyRenewalHours"))
for name, cert in (("ca", ca), ("leaf", leaf)):
    pulumi.export(name + "CertPem", cert.cert_pem)
    pulumi.export(name + "ValidityStartTime", cert.validity_start_time)
    pulumi.export(name + "ValidityEndTime", cert.validity_end_time)
    pulumi.export(name + "ReadyForRenewal", cert.ready_for_renewal)
"""


@dataclass
class Probe:
    stack: E2EStack
    outputs: dict


@pytest.fixture(scope="module")
def probe(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    tmp = tmp_path_factory.mktemp("tls")
    stack = Project.copy(tmp / "project", program=PROGRAM).stack(
        toolchain, tmp / "backend", "tls", {f"{PROJECT}:caEarlyRenewalHours": 24, f"{PROJECT}:leafEarlyRenewalHours": 24})
    stack.env["TZ"] = ZONE  # the workspace's env: the engine and the plugins it starts run in this zone
    try:
        result, _ = stack.up()
        assert result.summary.result == "succeeded", result.stdout[-3000:]
        yield Probe(stack, {k: v.value for k, v in result.outputs.items()})
    finally:
        (tmp / "engine-output.log").write_text("\n".join(stack.outputs))


def _ops_by_name(events) -> dict[str, str]:
    return {urn.rsplit("::", 1)[1]: op for urn, op in step_ops(events).items()}


def test_validity_times_are_marshal_text_in_the_providers_zone(probe: Probe):
    """terraform-provider-tls internal/provider/common_cert.go (createCertificate): NotBefore is
    time.Now(), both times are written with MarshalText, so RFC 3339 with up to nine fractional digits in
    the provider's local zone, not UTC whole seconds; the certificate itself says the same instant."""
    for name in ("ca", "leaf"):
        start, end = probe.outputs[f"{name}ValidityStartTime"], probe.outputs[f"{name}ValidityEndTime"]
        for text in (start, end):
            assert MARSHAL_TEXT.fullmatch(text) and text.endswith(OFFSET), f"{name}: {text!r}"
        hours = 8760 if name == "ca" else 720
        assert (parse_time(end) - parse_time(start)).total_seconds() == hours * 3600, (start, end)
        cert = x509.load_pem_x509_certificate(probe.outputs[f"{name}CertPem"].encode())
        assert cert.not_valid_after_utc == parse_time(end).replace(microsecond=0), (cert.not_valid_after_utc, end)
        assert probe.outputs[f"{name}ReadyForRenewal"] is False
    # nanoseconds where the clock has them: one of the four times without any fraction would be one in 10^9
    assert any("." in probe.outputs[k] for k in ("caValidityStartTime", "leafValidityStartTime"))


def test_changing_early_renewal_hours_is_an_update_that_keeps_the_certificate(probe: Probe):
    """terraform-provider-tls internal/provider/resource_self_signed_cert.go and
    resource_locally_signed_cert.go: early_renewal_hours is the one attribute without RequiresReplace, and
    Update is common.go updatedUsingPlan (state only). So the preview shows an update of that certificate
    alone, the leaf signed by the CA sees the same caCertPem (no replacement downstream), and after `up`
    the PEM and validity times are the ones created first."""
    s = probe.stack
    s.write_config({f"{PROJECT}:caEarlyRenewalHours": 48, f"{PROJECT}:leafEarlyRenewalHours": 48})
    result, events, _ = s.preview()
    ops = _ops_by_name(events)
    assert {n: o for n, o in ops.items() if o != "same"} == {"ca": "update", "leaf": "update"}, ops
    assert result.change_summary.get("update") == 2 and set(result.change_summary) == {"update", "same"}, \
        result.change_summary
    up, _ = s.up()
    changes = dict(up.summary.resource_changes or {})
    assert changes.get("update") == 2 and set(changes) == {"update", "same"}, changes
    after = {k: v.value for k, v in up.outputs.items()}
    for k in ("caCertPem", "caValidityEndTime", "leafCertPem", "leafValidityStartTime", "leafValidityEndTime"):
        assert after[k] == probe.outputs[k], k
    state = s.stack.export_stack().deployment["resources"]
    (ca,) = [r for r in state if r["urn"].endswith("::ca")]
    assert ca["outputs"]["earlyRenewalHours"] == 48 and ca["inputs"]["earlyRenewalHours"] == 48


def test_early_renewal_hours_that_reach_now_replace_the_certificate(probe: Probe):
    """terraform-provider-tls internal/provider/common_cert.go (modifyPlanIfCertificateReadyForRenewal,
    which the bridge runs in Diff): the planned early_renewal_hours against the state's validity_end_time;
    once now is inside the window the certificate is ready_for_renewal and planned for replacement."""
    s = probe.stack
    saved = s.config_file.read_text()
    s.write_config({f"{PROJECT}:leafEarlyRenewalHours": 721})  # the leaf lasts 720 h: the window began before now
    try:
        result, events, _ = s.preview()
    finally:
        s.config_file.write_text(saved)
    # create-replacement, replace, delete-replaced: every step of one replacement, of the leaf alone
    steps: dict[str, set[str]] = {}
    for e in events:
        if e.resource_pre_event is not None:
            meta = e.resource_pre_event.metadata
            steps.setdefault(meta.urn.rsplit("::", 1)[1], set()).add(getattr(meta.op, "value", str(meta.op)))
    assert {n: o for n, o in steps.items() if o != {"same"}} == {
        "leaf": {"create-replacement", "replace", "delete-replaced"}}, steps
    assert result.change_summary.get("replace") == 1, result.change_summary


def test_the_programs_remote_commands_do_not_rerun_on_an_early_renewal_hours_change(scenario):
    """The program's graph: pki.earlyRenewalHours feeds only the proxy-client certificate's
    earlyRenewalHours (components/pki.py). With upstream's update semantics (terraform-provider-tls
    resource_locally_signed_cert.go, common.go updatedUsingPlan) a change is an update of that certificate
    and nothing downstream changes: no certs or flags step, no restart, no file touched on any master."""
    s = scenario
    up, _ = s.stack.up()
    assert up.summary.result == "succeeded", up.stdout[-3000:]
    pem = {k: v.value for k, v in up.outputs.items()}["proxyClientCertPem"]
    before = {h.name: h.config_bytes() for h in s.hosts}
    restarts = {h.name: h.restarts() for h in s.hosts}
    pki = s.stack.read_config()[f"{PROJECT}:pki"]
    s.stack.set_keys(f"{PROJECT}:pki", earlyRenewalHours=int(pki.get("earlyRenewalHours", 720)) + 1)

    result, events, _ = s.stack.preview()
    changed = {(u.split("::")[2].rsplit("$", 1)[-1], u.rsplit("::", 1)[1]): o
               for u, o in step_ops(events).items() if o != "same"}
    assert changed == {(LOCALLY_SIGNED_CERT_TYPE, contract.PROXY_CLIENT_CERT_NAME): "update"}, changed
    assert set(result.change_summary) == {"same", "update"}, result.change_summary

    up, _ = s.stack.up()
    assert dict(up.summary.resource_changes or {}).get("update") == 1, up.summary.resource_changes
    assert set(up.summary.resource_changes or {}) == {"same", "update"}, up.summary.resource_changes
    assert {k: v.value for k, v in up.outputs.items()}["proxyClientCertPem"] == pem
    assert {h.name: h.config_bytes() for h in s.hosts} == before
    assert {h.name: h.restarts() for h in s.hosts} == restarts
