"""Taking over clusters that are not blank (issue 10), on one sandbox, in order:

  hand-made states, each proven WITHOUT the program (the metrics API answers through every master):
    guide masters + `kubectl apply`            -> (a) takeover with a new CA  -> (d) destroy restores them
    guide masters + `kubectl apply --server-side` -> (b) takeover keeping the cfssl CA -> (d)
    kubeadm masters + `kubectl create`         -> (c) apiserver.manage: false, first with one flag missing
                                                  on master2 (fails, nothing created), then fixed -> (d)
    guide masters + a Helm-installed metrics-server -> (e) `up` stops, nothing created
Each hand-made state is built from the sandbox's pristine masters (tests/e2e/handmade.py `build`), so a
case that fails leaves nothing to the next one but its finding. Every case has a stack of its own.

After a takeover: `up` succeeded, the APIService verifies metrics-server (a caBundle, no
insecureSkipTLSVerify) and is Available, the Deployment has no --kubelet-insecure-tls, every object of the
hand-made install kept its uid (adopted, not recreated), the metrics API answers through every master, and
a second preview is empty. After `destroy`: every watched file on every master is byte for byte (bytes,
mode, owner) what the hand-made set-up left, and each apiserver, restarted by the test, becomes ready.

Config keys (issue 10, as planned by the branches building them): `metrics-aggregation:pki.existingCa`
{certFile, keyFile}, `metrics-aggregation:apiserver.manage: false`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pulumi import automation as auto

from sandbox.cluster import MASTERS, Sandbox, wait_for
from tests.e2e import handmade as hm_mod
from tests.e2e.engine import PROJECT, E2EStack, Project, Toolchain
from tests.e2e.handmade import APISERVICE, DEPLOYMENT, HandMade, HandMadeError
from tests.e2e.sandboxes import earlier, running_sandbox, sandbox_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MISSING_FLAG = "--requestheader-client-ca-file"  # (c): the flag removed from master2 by hand
BROKEN_MASTER = "master2"


@dataclass
class Takeover:
    sb: Sandbox
    toolchain: Toolchain
    tmp: Path
    pristine: hm_mod.Snapshot  # the sandbox's masters before any hand-made change
    stacks: list[E2EStack] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def stack(self, case: str, **overrides: dict[str, Any]) -> E2EStack:
        """A fresh stack for one case: the sandbox config, `overrides` merged into its config objects
        (`pki={...}` -> `metrics-aggregation:pki`)."""
        config = sandbox_config(self.sb)
        for key, values in overrides.items():
            full = f"{PROJECT}:{key}"
            config[full] = {**config.get(full, {}), **values}
        st = Project.copy(self.tmp / f"project-{case}").stack(self.toolchain, self.tmp / f"backend-{case}", "takeover",
                                                               config)
        self.stacks.append(st)
        return st

    def build(self, key: str, flavour: str, how: str) -> HandMade:
        try:
            hm = hm_mod.build(self.sb, flavour, how, self.pristine)
        except HandMadeError as e:
            pytest.fail(f"the hand-made state ({flavour}, {how}) did not come up: {e}", pytrace=False)
        self.results[key] = hm
        return hm

    def require(self, key: str) -> Any:
        return earlier(self.results, key)


@pytest.fixture(scope="module")
def takeover(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Takeover]:
    tmp = tmp_path_factory.mktemp("tko")
    with running_sandbox(toolchain.bin_dir, tmp) as sb:
        t = Takeover(sb, toolchain, tmp, hm_mod.snapshot(sb))
        try:
            yield t
        finally:
            (tmp / "engine-output.log").write_text("\n".join(line for s in t.stacks for line in s.outputs))


# ------------------------------------------------------------------------------------------ checks
def _proves_the_handmade_state(t: Takeover, hm: HandMade) -> None:
    """What the person sees: the metrics API answers through every master, verified by nobody."""
    api = t.sb.api()
    svc = api.get(APISERVICE)
    assert svc["spec"].get("insecureSkipTLSVerify") is True, svc["spec"]
    assert "caBundle" not in svc["spec"]
    assert _condition(svc, "Available") == "True", svc.get("status")
    args = api.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--kubelet-insecure-tls" in args
    for m in MASTERS:
        assert hm_mod.node_metrics(t.sb.master_api(m)), f"{m}: the metrics API does not answer"
    # the files as the person left them, on every master
    for m in MASTERS:
        files = hm.snapshot[m]
        ca_file, key_file = hm.ca_file, hm.key_file
        assert files[ca_file] and files[ca_file].data == hm.bundle.ca_cert_pem and files[ca_file].mode == 0o644
        assert files[key_file] and files[key_file].data == hm.bundle.key_pem and files[key_file].mode == 0o600
        assert (files[key_file].uid, files[key_file].gid) == (0, 0)


def _condition(obj: dict, kind: str) -> str | None:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def _answers_before(t: Takeover) -> None:
    """The metrics API answers through every master right before the case's `up`."""
    silent = [m for m in MASTERS if not hm_mod.node_metrics(t.sb.master_api(m))]
    assert not silent, f"the metrics API does not answer through {silent} before the takeover"


def _up(st: E2EStack) -> dict[str, Any]:
    try:
        result, _ = st.up()
    except auto.CommandError as e:
        error = str(e)
    else:
        assert result.summary.result == "succeeded", result.stdout[-3000:]
        return {k: v.value for k, v in result.outputs.items()}
    pytest.fail(f"pulumi up failed:\n{error[-5000:]}", pytrace=False)
    return {k: v.value for k, v in result.outputs.items()}


def _up_fails(st: E2EStack) -> str:
    with pytest.raises(auto.CommandError) as err:
        st.up()
    return str(err.value)


def _assert_taken_over(t: Takeover, hm: HandMade, st: E2EStack) -> None:
    api = t.sb.api()
    svc = api.get(APISERVICE)
    assert not svc["spec"].get("insecureSkipTLSVerify"), f"the APIService still skips TLS verification: {svc['spec']}"
    ca_bundle = base64.b64decode(svc["spec"].get("caBundle") or "")
    assert b"BEGIN CERTIFICATE" in ca_bundle, svc["spec"]
    args = api.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--kubelet-insecure-tls" not in args, args
    now = hm_mod.read_objects(api, hm.paths)
    recreated = {k: (hm.objects[k]["metadata"]["uid"], (v or {}).get("metadata", {}).get("uid"))
                 for k, v in now.items() if (v or {}).get("metadata", {}).get("uid") != hm.objects[k]["metadata"]["uid"]}
    assert not recreated, f"not adopted in place (uid before -> after): {recreated}"
    # the sandbox's pod runner stops the old metrics-server before it starts the new one (no rolling
    # update there), so the metrics API may be away for one metrics-server restart right after `up`
    try:
        hm_mod.wait_for_metrics(t.sb, timeout=120)
        wait_for(lambda: _condition(api.get(APISERVICE), "Available") == "True", "the APIService Available", 60, 1.0,
                 error=HandMadeError)
    except HandMadeError as e:
        pytest.fail(f"the metrics API does not answer after the takeover: {e}", pytrace=False)
    result, _events, _ = st.preview()
    changes = {op: n for op, n in result.change_summary.items() if op != "same" and n}
    assert not changes, f"a second preview is not empty: {changes}\n{result.stdout[-3000:]}"


def _assert_destroy_restores(t: Takeover, hm: HandMade, st: E2EStack) -> None:
    if not _custom_resources(st):  # e.g. the config was refused: a destroy of nothing would prove nothing
        pytest.fail("the case's `up` created nothing, so there is no destroy to check (see the case's failure)",
                    pytrace=False)
    try:
        result, _ = st.destroy()
    except auto.CommandError as e:
        error = str(e)
    else:
        error = None if result.summary.result == "succeeded" else result.stdout
    if error is not None:
        pytest.fail(f"pulumi destroy failed:\n{error[-5000:]}", pytrace=False)
    diff = hm_mod.differences(hm.snapshot, hm_mod.snapshot(t.sb))
    assert not diff, "destroy did not return the hand-made files:\n" + "\n".join(diff)
    try:
        hm_mod.restart_apiservers(t.sb)
    except HandMadeError as e:
        pytest.fail(f"an apiserver does not come back on the restored files: {e}", pytrace=False)
    for m in MASTERS:
        assert t.sb.master_api(m).ok(), m


def _custom_resources(st: E2EStack) -> list[str]:
    """Type and name of every resource in the stack's state but the stack, components and providers."""
    export = json.loads(st.cli("stack", "export"))
    return [f"{r['type']} {r['urn'].rsplit('::', 1)[-1]}" for r in export.get("deployment", {}).get("resources") or []
            if r.get("custom") and not r["type"].startswith("pulumi:providers:")]


def _versions(objects: dict[str, dict | None]) -> dict[str, str | None]:
    return {k: (v or {}).get("metadata", {}).get("resourceVersion") for k, v in objects.items()}


def _der(pem: bytes | str) -> bytes:
    pem = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _master_file(t: Takeover, master: str, path: str) -> bytes:
    return hm_mod.host_path(t.sb, master, path).read_bytes()


def _nothing_created(t: Takeover, hm: HandMade, st: E2EStack, files: hm_mod.Snapshot, gens: dict[str, int],
                     versions: dict[str, str | None], kinds: tuple[str, ...] = ("",)) -> list[str]:
    """Every way a failed `up` could have touched something: resources in the stack (of `kinds`), files
    on the masters, apiserver restarts, the existing metrics-server objects. -> one line per finding."""
    problems = [f"in the stack: {r}" for r in _custom_resources(st) if r.startswith(kinds)]
    problems += [f"on a master: {d}" for d in hm_mod.differences(files, hm_mod.snapshot(t.sb))]
    now = hm_mod.generations(t.sb)
    problems += [f"{m}: kube-apiserver restarted" for m in MASTERS if now[m] != gens[m]]
    after = _versions(hm_mod.read_objects(t.sb.api(), hm.paths))
    problems += [f"{k} changed (resourceVersion {v} -> {after[k]})" for k, v in versions.items() if after[k] != v]
    return problems


# ------------------------------------------------------------------------------------------ (a) new CA
def test_guide_state_with_kubectl_apply_serves_metrics_without_the_program(takeover):
    hm = takeover.build("guide-apply", "guide", "apply")
    _proves_the_handmade_state(takeover, hm)
    cert = hm.bundle.cert
    assert cert.subject == hm.bundle.ca_cert.subject == cert.issuer  # the guide's same-DN pair
    cert.verify_directly_issued_by(hm.bundle.ca_cert)


def test_a_takeover_with_a_new_ca(takeover):
    t = takeover
    hm = t.require("guide-apply")
    _answers_before(t)
    st = t.results["a"] = t.stack("a")  # (d) destroys it whether `up` works or not (after a failed first apply too)
    outputs = _up(st)
    assert _der(outputs["aggregatorCaCertPem"]) != _der(hm.bundle.ca_cert_pem)
    for m in MASTERS:
        assert _der(_master_file(t, m, hm_mod.GUIDE_CA)) == _der(outputs["aggregatorCaCertPem"]), m
        assert t.sb.master_api(m).ok(), m
    _assert_taken_over(t, hm, st)


def test_d_destroy_after_a_returns_the_handmade_state(takeover):
    t = takeover
    _assert_destroy_restores(t, t.require("guide-apply"), t.require("a"))


# ------------------------------------------------------------------------------------------ (b) existing CA
def test_guide_state_with_server_side_apply_serves_metrics_without_the_program(takeover):
    hm = takeover.build("guide-ssa", "guide", "apply-server-side")
    _proves_the_handmade_state(takeover, hm)


def test_b_takeover_keeping_the_existing_ca(takeover):
    """pki.existingCa from the cfssl files on the operator's machine: the proxy cert is signed by that CA,
    the masters' CA file keeps that CA, and no apiserver restarts (its flags are already the program's)."""
    t = takeover
    hm = t.require("guide-ssa")
    ops = t.tmp / "operator-b"
    ops.mkdir()
    (ops / "aggregator-ca.pem").write_bytes(hm.bundle.ca_cert_pem)
    (ops / "aggregator-ca-key.pem").write_bytes(hm.bundle.ca_key_pem)
    (ops / "aggregator-ca-key.pem").chmod(0o600)
    st = t.stack("b", pki={"existingCa": {"certFile": str(ops / "aggregator-ca.pem"),
                                          "keyFile": str(ops / "aggregator-ca-key.pem")}})
    t.results["b"] = st
    _answers_before(t)
    before = hm_mod.generations(t.sb)
    outputs = _up(st)
    assert _der(outputs["aggregatorCaCertPem"]) == _der(hm.bundle.ca_cert_pem)
    for m in MASTERS:
        assert _der(_master_file(t, m, hm_mod.GUIDE_CA)) == _der(hm.bundle.ca_cert_pem), m
        leaf = x509.load_pem_x509_certificate(_master_file(t, m, hm_mod.GUIDE_CERT))
        leaf.verify_directly_issued_by(hm.bundle.ca_cert)
        assert t.sb.master_api(m).ok(), m
    assert hm_mod.generations(t.sb) == before, "an apiserver restarted although its CA and flags stayed the same"
    _assert_taken_over(t, hm, st)


def test_d_destroy_after_b_returns_the_handmade_state(takeover):
    t = takeover
    _assert_destroy_restores(t, t.require("guide-ssa"), t.require("b"))


# ------------------------------------------------------------------------------------------ (c) manage: false
def _manage_false_stack(t: Takeover, case: str) -> E2EStack:
    """kubeadm's names: the front-proxy files in /etc/kubernetes/pki, CN front-proxy-client."""
    return t.stack(case, apiserver={"manage": False, "certDir": hm_mod.KUBEADM_DIR},
                   pki={"proxyClientCommonName": hm_mod.KUBEADM_CLIENT_CN})


def test_kubeadm_state_with_kubectl_create_serves_metrics_without_the_program(takeover):
    hm = takeover.build("kubeadm-create", "kubeadm", "create")
    _proves_the_handmade_state(takeover, hm)
    assert hm.bundle.cert.issuer == hm.bundle.ca_cert.subject != hm.bundle.cert.subject


def test_c_manage_false_fails_on_a_master_missing_a_flag_and_creates_nothing(takeover):
    t = takeover
    hm = t.require("kubeadm-create")
    hm_mod.edit_env_file(t.sb, BROKEN_MASTER, lambda text: hm_mod.drop_flag(text, MISSING_FLAG))
    hm_mod.restart_apiserver(t.sb, BROKEN_MASTER)
    try:
        broken = hm_mod.snapshot(t.sb)
        gens = hm_mod.generations(t.sb)
        versions = _versions(hm_mod.read_objects(t.sb.api(), hm.paths))
        st = _manage_false_stack(t, "c-fail")
        message = _up_fails(st)
        problems = _nothing_created(t, hm, st, broken, gens, versions, kinds=("kubernetes:",))
        if not (BROKEN_MASTER in message and MISSING_FLAG in message):
            problems.append(f"the error does not name {BROKEN_MASTER} and {MISSING_FLAG}:\n{message[-4000:]}")
        assert not problems, "\n".join(problems)
    finally:
        # the person fixes master2 (its file back as the hand-made state had it, restarted), for case (c)
        hm_mod.restore(t.sb, hm.snapshot)
        hm_mod.restart_apiserver(t.sb, BROKEN_MASTER)
        hm_mod.wait_for_metrics(t.sb)
        t.results["c-fixed"] = True


def test_c_manage_false_takes_over_metrics_server_only(takeover):
    t = takeover
    hm = t.require("kubeadm-create")
    t.require("c-fixed")
    _answers_before(t)
    gens = hm_mod.generations(t.sb)
    st = t.results["c"] = _manage_false_stack(t, "c")
    _up(st)
    diff = hm_mod.differences(hm.snapshot, hm_mod.snapshot(t.sb))
    assert not diff, "manage: false changed files on the masters:\n" + "\n".join(diff)
    assert hm_mod.generations(t.sb) == gens, "manage: false restarted an apiserver"
    _assert_taken_over(t, hm, st)


def test_d_destroy_after_c_returns_the_handmade_state(takeover):
    t = takeover
    _assert_destroy_restores(t, t.require("kubeadm-create"), t.require("c"))


# ------------------------------------------------------------------------------------------ (e) Helm
def test_helm_state_serves_metrics_without_the_program(takeover):
    hm = takeover.build("helm", "guide", "helm")
    _proves_the_handmade_state(takeover, hm)
    svc = hm.objects["APIService/v1beta1.metrics.k8s.io"]
    assert svc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert svc["metadata"]["annotations"]["meta.helm.sh/release-name"] == hm_mod.HELM_RELEASE


def test_e_helm_metrics_server_stops_up_before_anything_is_created(takeover):
    t = takeover
    hm = t.require("helm")
    _answers_before(t)
    gens = hm_mod.generations(t.sb)
    versions = _versions(hm_mod.read_objects(t.sb.api(), hm.paths))
    st = t.stack("e")
    message = _up_fails(st)
    problems = _nothing_created(t, hm, st, hm.snapshot, gens, versions)
    problems += [f"{m}: the metrics API stopped answering" for m in MASTERS if not hm_mod.node_metrics(t.sb.master_api(m))]
    if not (hm_mod.HELM_RELEASE in message and "Helm" in message):
        problems.append(f"the error does not name Helm and the release {hm_mod.HELM_RELEASE!r}:\n{message[-4000:]}")
    assert not problems, "\n".join(problems)
