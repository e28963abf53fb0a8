"""Engine tier on the sandbox: a CA rotation with an overlap (issue 13 part 3, docs/ca-rotation.md), every
stage a real `pulumi up` against three real kube-apiservers and metrics-server, while the metrics API is
sampled every 200 ms through every master (lab.sampler):

  generation 1 -> caGeneration 2 + caRotation trust -> sign, first too early (the gate refuses, nothing on
  the masters changes), then after the wait -> caRotation removed (done)

Checked: 0 failed samples; no apiserver restarted (the sandbox's per-master start counter); every master's
aggregator-ca.pem is the bundle, then the new CA alone; the proxy cert moves to the new CA with the same
key; the ConfigMap kube-system/extension-apiserver-authentication gains the new CA, and ends holding only
the new CA (by DER) after the prune's own re-check; the old CA has left the state (the engine deleted it,
which it could only do because stage sign lifted its protect). The figures (failures, longest gap,
restarts, wall time per stage) are printed and written to rotation-figures.json in the test's directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pulumi import automation as auto

from components.ca_retirement import CONFIGMAP_PATH, KEY, RELOAD_SECONDS, der
from lab.sampler import Sampler
from sandbox.cluster import MASTERS, Sandbox, wait_for
from tests.e2e.engine import PROJECT, E2EStack, Project, Toolchain
from tests.e2e.handmade import generations
from tests.e2e.sandboxes import metrics_api_probes, running_sandbox, sandbox_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

PKI = f"{PROJECT}:pki"


def ssl_file(sb: Sandbox, master: str, name: str) -> Path:
    return sb.master_dir(master) / "etc-kubernetes" / "ssl" / name


def trusted_by_configmap(sb: Sandbox) -> list[x509.Certificate]:
    cm = sb.master_api("master1").get(CONFIGMAP_PATH) or {}
    text = (cm.get("data") or {}).get(KEY) or ""
    return x509.load_pem_x509_certificates(text.encode()) if "CERTIFICATE" in text else []


def cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def set_pki(stack: E2EStack, **changes: object) -> None:
    stack.set_keys(PKI, **changes)


def up(stack: E2EStack) -> tuple[dict, float]:
    result, seconds = stack.up()
    assert result.summary.result == "succeeded", result.stdout[-3000:]
    return {k: v.value for k, v in result.outputs.items()}, seconds


def test_a_staged_rotation_keeps_the_metrics_api_up(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("rot")
    with running_sandbox(toolchain.bin_dir, tmp) as sb:
        config = sandbox_config(sb)
        # the default: the old CA must lose `protect` in stage sign for the engine to delete it when done
        config[PKI] = {**config[PKI], "protectCa": True}
        stack = Project.copy(tmp / "project").stack(toolchain, tmp / "backend", "rotation", config)
        try:
            _rotate(sb, stack, tmp)
        finally:
            (tmp / "engine-output.log").write_text("\n".join(stack.outputs))


def _rotate(sb: Sandbox, stack: E2EStack, tmp: Path) -> None:
    first, _ = up(stack)
    old = x509.load_pem_x509_certificate(first["aggregatorCaCertPem"].encode())
    probes = metrics_api_probes(sb)
    wait_for(lambda: all(_ok(p) for p in probes.values()), "the metrics API through every master", 180, 1.0)
    wait_for(lambda: der(old) in {der(c) for c in trusted_by_configmap(sb)}, "generation 1 in the ConfigMap", 90, 1.0)
    started = generations(sb)
    key = {m: ssl_file(sb, m, "aggregator-key.pem").read_bytes() for m in MASTERS}
    seconds: dict[str, float] = {}

    with Sampler(probes, interval=0.2) as sampler:
        # 1 trust: the new CA; every master trusts both
        set_pki(stack, caGeneration=2, caRotation="trust")
        outputs, seconds["trust"] = up(stack)
        bundle = x509.load_pem_x509_certificates(outputs["aggregatorCaCertPem"].encode())
        assert [cn(c) for c in bundle] == ["sandbox-aggregator-ca", "sandbox-aggregator-ca-gen2"]
        assert bundle[0] == old
        new = bundle[1]
        for m in MASTERS:
            assert ssl_file(sb, m, "aggregator-ca.pem").read_text() == outputs["aggregatorCaCertPem"]
        wait_for(lambda: der(new) in {der(c) for c in trusted_by_configmap(sb)}, "the new CA in the ConfigMap", 60, 0.5)

        # 2 sign, too early: the gate refuses before the proxy cert or any master is touched
        set_pki(stack, caRotation="sign")
        proxy = {m: ssl_file(sb, m, "aggregator.pem").read_bytes() for m in MASTERS}
        age = time.time() - new.not_valid_before_utc.timestamp()
        assert age < RELOAD_SECONDS - 15, f"stage trust took too long ({age:.0f} s) to see the gate refuse"
        t = time.monotonic()
        with pytest.raises(auto.CommandError) as err:
            stack.up()
        seconds["sign, refused"] = time.monotonic() - t
        message = str(err.value)
        assert "pki.caRotation" in message and "wait" in message and "nothing changed" in message, message[-3000:]
        assert {m: ssl_file(sb, m, "aggregator.pem").read_bytes() for m in MASTERS} == proxy
        time.sleep(max(0.0, RELOAD_SECONDS + 1 - (time.time() - new.not_valid_before_utc.timestamp())))
        outputs, seconds["sign"] = up(stack)
        signed = x509.load_pem_x509_certificate(outputs["proxyClientCertPem"].encode())
        assert signed.issuer == new.subject
        for m in MASTERS:
            assert ssl_file(sb, m, "aggregator.pem").read_text() == outputs["proxyClientCertPem"]
            assert ssl_file(sb, m, "aggregator-key.pem").read_bytes() == key[m]  # same key: one rename, no bad pair
            assert len(x509.load_pem_x509_certificates(ssl_file(sb, m, "aggregator-ca.pem").read_bytes())) == 2

        # 3 done: the new CA alone; the ConfigMap pruned of exactly the old CA, re-checked after > 60 s
        set_pki(stack, caRotation=None)
        outputs, seconds["done"] = up(stack)
        assert x509.load_pem_x509_certificates(outputs["aggregatorCaCertPem"].encode()) == [new]
        for m in MASTERS:
            assert ssl_file(sb, m, "aggregator-ca.pem").read_text() == outputs["aggregatorCaCertPem"]
    report = sampler.report()

    in_configmap = trusted_by_configmap(sb)
    restarts = {m: generations(sb)[m] - started[m] for m in MASTERS}
    figures = {"failures": len(report.failures), "samples": report.samples,
               "longest_gap_s": round(report.longest_gap_s, 2), "restarts": restarts,
               "seconds_per_stage": {k: round(v, 1) for k, v in seconds.items()},
               "configmap": [cn(c) for c in in_configmap]}
    (tmp / "rotation-figures.json").write_text(json.dumps(figures, indent=1))
    print("\nrotation figures:", json.dumps(figures))
    assert report.failures == [], report.summary()
    assert restarts == {m: 0 for m in MASTERS}, "an apiserver restarted during the rotation"
    assert [der(c) for c in in_configmap] == [der(new)], [cn(c) for c in in_configmap]
    # the old CA left the state: deleted by the engine (its protect was lifted in stage sign)
    state = json.loads(stack.cli("stack", "export"))
    names = {r["urn"].rsplit("::", 1)[1] for r in state["deployment"]["resources"]}
    assert "aggregator-ca" not in names and "aggregator-ca-key" not in names
    assert {"aggregator-ca-gen2", "aggregator-ca-gen2-key"} <= names
    # a second preview after the rotation changes nothing
    preview, _, _ = stack.preview()
    assert set(preview.change_summary) <= {"same"}, preview.change_summary


def _ok(probe) -> bool:
    try:
        probe()
        return True
    except Exception:  # noqa: BLE001 - not ready yet
        return False
