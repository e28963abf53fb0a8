"""Renewal without restarts (issue 13 part 2), on one sandbox and one stack, in order:

  up (pki.renewNow "1": the first value is only recorded)   -> the metrics API answers through every master
  (a) pki.renewNow "2"                                       -> a new proxy-client cert, same key
  (b) the proxy cert's end moved into earlyRenewalHours      -> the same, as time would do it
  pki.renewNow removed, then set again                       -> nothing renewed (the trigger's null rule)
  (c) the serving cert's end moved into its earlyRenewalHours -> a new serving cert, the Deployment rolls

While each renewal's `up` runs, the metrics API is sampled every 200 ms through every master
(lab.sampler, tests/e2e/sandboxes.metrics_api_probes): no sample may fail. After (a) and (b): every
master's kube-apiserver is the same process (pid, start time in /proc, the supervisor's generation), the
`up` updated every `<master>-certs` step and left every `<master>-flags` step alone, the key file is
byte for byte the old one, and the apiservers present the new certificate. That last one is seen from the
receiving side: a throwaway aggregated API (`ProbeServer`, an HTTPS server at the runner's address behind
an APIService of its own) trusts the aggregator CA as metrics-server does and records the serial of the
client certificate every proxied request comes with, by the master that sent it (the source address:
with enableAggregatorRouting each apiserver dials the endpoint itself). Old keep-alive connections are
not reused for new requests after a reload (a new transport), so a request made after the reload shows
the certificate the apiserver now holds.

(b) and (c) move time honestly: the certificate's validityEndTime in the stack's state (`pulumi stack
export`/`import`) is set to within earlyRenewalHours of now, which is what the passage of time does to the
comparison the tls provider makes at Diff (its readyForRenewal; the certificate itself is untouched).
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from pulumi import automation as auto

from components import contract
from lab import proc
from lab.kube import ApiError
from lab.pki import Cert, Pki
from lab.sampler import Report, Sampler
from sandbox.cluster import MASTERS, Sandbox, wait_for
from tests.e2e import handmade as hm
from tests.e2e.engine import LOCALLY_SIGNED_CERT_TYPE, PROJECT, E2EStack, Project, Toolchain
from tests.e2e.sandboxes import (
    earlier,
    metrics_api_probes,
    running_sandbox,
    sandbox_config,
    serving_metrics_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PROBE_GROUP = "renewal-probe.e2e.test"
PROBE_VERSION = "v1alpha1"
PROBE_NAME = "renewal-probe"
PROBE_PORT = 18443
PROXY_CERT_TYPE = LOCALLY_SIGNED_CERT_TYPE
KEY_TYPE = "tls:index/privateKey:PrivateKey"
COMMAND_TYPE = "command:remote:Command"
DEPLOYMENT = "/apis/apps/v1/namespaces/kube-system/deployments/metrics-server"
SERVING_SECRET = "/api/v1/namespaces/kube-system/secrets/metrics-server-serving-cert"


def _type_and_name(urn: str) -> str:
    """urn:pulumi:<stack>::<project>::<parent types>$<type>::<name> -> "<type>::<name>"."""
    qualified, _, name = urn.rpartition("::")
    return f"{qualified.rpartition('::')[2].rpartition('$')[2]}::{name}"


def _serial(pem: str | bytes) -> int:
    return x509.load_pem_x509_certificate(pem if isinstance(pem, bytes) else pem.encode()).serial_number


# ------------------------------------------------------------------------------------------ the receiving side
class ProbeServer:
    """An aggregated API server of the test's own: answers the discovery GET of its group version and
    records (source address, client certificate serial) of every request that came with a certificate
    signed by the aggregator CA, which is the only one it trusts (as metrics-server trusts it)."""

    def __init__(self, address: str, port: int, serving: tuple[Path, Path], trusted_ca_pem: str):
        self.seen: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                der = self.connection.getpeercert(binary_form=True)
                if der is not None:
                    with owner._lock:
                        owner.seen.append((self.client_address[0], x509.load_der_x509_certificate(der).serial_number))
                body = json.dumps({"kind": "APIResourceList", "apiVersion": "v1",
                                   "groupVersion": f"{PROBE_GROUP}/{PROBE_VERSION}", "resources": []}).encode()
                self.send_response(200 if der is not None else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(serving[0]), str(serving[1]))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=trusted_ca_pem)
        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def last_serial_from(self, address: str) -> int | None:
        with self._lock:
            serials = [s for a, s in self.seen if a == address]
        return serials[-1] if serials else None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def register_probe(sb: Sandbox, ca_bundle_pem: bytes) -> None:
    """Service (no selector) + EndpointSlice at the runner's address + APIService, as metrics-server's."""
    api = sb.api()
    ns = "kube-system"
    svc = api.apply(f"/api/v1/namespaces/{ns}/services", PROBE_NAME, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": PROBE_NAME, "namespace": ns},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": PROBE_PORT, "protocol": "TCP"}]}})
    api.apply(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", PROBE_NAME, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": PROBE_NAME, "namespace": ns, "labels": {"kubernetes.io/service-name": PROBE_NAME},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": PROBE_NAME,
                                          "uid": svc["metadata"]["uid"]}]},
        "endpoints": [{"addresses": [sb.runner_ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": PROBE_PORT, "protocol": "TCP"}]})
    api.apply("/apis/apiregistration.k8s.io/v1/apiservices", f"{PROBE_VERSION}.{PROBE_GROUP}", {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": f"{PROBE_VERSION}.{PROBE_GROUP}"},
        "spec": {"group": PROBE_GROUP, "version": PROBE_VERSION, "groupPriorityMinimum": 100, "versionPriority": 100,
                 "service": {"name": PROBE_NAME, "namespace": ns, "port": 443},
                 "caBundle": base64.b64encode(ca_bundle_pem).decode()}})


# ------------------------------------------------------------------------------------------ the scenario
@dataclass
class Apiserver:
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: when the process started, in clock ticks since boot
    generation: int


def apiservers(sb: Sandbox) -> dict[str, Apiserver]:
    out = {}
    for m in MASTERS:
        pid = int((sb.master_dir(m) / "child.pid").read_text())
        out[m] = Apiserver(pid, int(proc.stat_fields(pid)[19]), hm.generation(sb, m))
    return out


@dataclass
class Renewal:
    report: Report
    ops: dict[str, set[str]]  # "<type>::<name>" -> the ops the up's engine events reported
    summary: dict[str, int]


@dataclass
class RenewalScenario:
    sb: Sandbox
    stack: E2EStack
    tmp: Path
    probe: ProbeServer | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def cert_file(self, master: str, name: str) -> bytes:
        return (self.sb.master_dir(master) / "etc-kubernetes" / "ssl" / name).read_bytes()

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.stack.stack.outputs().items()}

    def proxy_serial(self) -> int:
        return _serial(self.outputs()[contract.OUTPUT_PROXY_CLIENT_CERT_PEM])

    def up_sampled(self, before_up: Callable[[], None] = lambda: None, settle: Callable[[], None] = lambda: None
                   ) -> Renewal:
        """`before_up`, then `up` and `settle` while the metrics API is sampled every 200 ms through every master."""
        events: list[auto.EngineEvent] = []
        before_up()
        with Sampler(metrics_api_probes(self.sb), interval=0.2, max_duration=600) as s:
            result, _ = self.stack.up(on_event=events.append)
            settle()
        report = s.report()
        ops: dict[str, set[str]] = {}
        for e in events:
            pre = e.resource_pre_event
            if pre is not None:
                op = pre.metadata.op.value if hasattr(pre.metadata.op, "value") else str(pre.metadata.op)
                ops.setdefault(_type_and_name(pre.metadata.urn), set()).add(op)
        return Renewal(report, ops, dict(result.summary.resource_changes or {}))

    def move_end_into_renewal_window(self, name: str) -> None:
        """The certificate's validityEndTime in state one hour from now (earlyRenewalHours is 720)."""
        self.stack.move_cert_end(name, 1, self.tmp)

    def require(self, key: str) -> Any:
        return earlier(self.results, key)


@pytest.fixture(scope="module")
def renewal(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RenewalScenario]:
    tmp = tmp_path_factory.mktemp("rnw")
    with running_sandbox(toolchain.bin_dir, tmp) as sb:
        config = sandbox_config(sb)
        config[f"{PROJECT}:pki"] = {**config[f"{PROJECT}:pki"], "renewNow": "1"}
        stack = Project.copy(tmp / "project").stack(toolchain, tmp / "backend", "renewal", config)
        s = RenewalScenario(sb, stack, tmp)
        try:
            yield s
        finally:
            if s.probe is not None:
                s.probe.close()
            (tmp / "engine-output.log").write_text("\n".join(stack.outputs))


# ------------------------------------------------------------------------------------------ cases
def test_up_and_a_probe_behind_the_aggregator(renewal):
    s = renewal
    s.stack.up()
    hm.wait_for_metrics(s.sb)
    out = s.outputs()
    # the test's aggregated API trusts what metrics-server trusts: the aggregator CA (here the stack's own)
    pki = Pki(s.tmp / "probe-pki")
    pki.dir.mkdir()
    pki.ca("ca", "renewal-probe-ca")
    pki.leaf(Cert("probe", "ca", PROBE_NAME, server=True, dns=(f"{PROBE_NAME}.kube-system.svc",)))
    s.probe = ProbeServer(s.sb.runner_ip, PROBE_PORT, (pki.path("probe"), pki.path("probe", "key")),
                          out[contract.OUTPUT_AGGREGATOR_CA_CERT_PEM])
    register_probe(s.sb, pki.path("ca").read_bytes())
    serial = _serial(out[contract.OUTPUT_PROXY_CLIENT_CERT_PEM])
    assert wait_probe(s, serial) == {m: serial for m in MASTERS}
    s.results["up"] = {"serial": serial, "apiservers": apiservers(s.sb),
                       "key": {m: s.cert_file(m, "aggregator-key.pem") for m in MASTERS}}


def wait_probe(s: RenewalScenario, serial: int, timeout: float = 60) -> dict[str, int | None]:
    """GET the probe's group version through each master until each presents the certificate `serial`."""
    path = f"/apis/{PROBE_GROUP}/{PROBE_VERSION}"
    latest: dict[str, int | None] = {}

    def presented(m: str) -> bool:
        try:
            s.sb.master_api(m).get(path)
        except (OSError, ApiError, ValueError):
            return False
        latest[m] = s.probe.last_serial_from(s.sb.masters[m]) if s.probe else None
        return latest[m] == serial

    for m in MASTERS:
        try:
            wait_for(lambda m=m: presented(m), f"{m} presenting the proxy cert {serial:x}", timeout, 0.5)
        except Exception:  # noqa: BLE001 - the assertion below names what was seen instead
            pass
    return latest


def _check_no_restart_and_new_cert(s: RenewalScenario, case: str, r: Renewal, old_serial: int) -> int:
    base = s.require("up")
    new_serial = s.proxy_serial()
    facts = {"failures": [str(f) for f in r.report.failures], "longest_gap_s": round(r.report.longest_gap_s, 2),
             "samples": r.report.samples, "ops": {k: sorted(v) for k, v in r.ops.items()}}
    (s.tmp / f"renewal-{case}.json").write_text(json.dumps(facts, indent=1))
    print(f"\n{case}: {r.report.summary()}")
    assert new_serial != old_serial, f"{case}: the proxy-client certificate was not renewed"
    assert r.report.failures == [], r.report.summary()
    # only the certificate and the certs steps: the key stays, the flags steps (restarts) do not run
    assert r.ops.get(f"{KEY_TYPE}::proxy-client-key") == {"same"}
    assert r.ops.get(f"{PROXY_CERT_TYPE}::proxy-client") == {"create-replacement", "replace", "delete-replaced"}
    for m in MASTERS:
        assert r.ops.get(f"{COMMAND_TYPE}::{m}-certs") == {"update"}, m
        assert r.ops.get(f"{COMMAND_TYPE}::{m}-flags") == {"same"}, m
        assert _serial(s.cert_file(m, "aggregator.pem")) == new_serial, m
        assert s.cert_file(m, "aggregator-key.pem") == base["key"][m], f"{m}: the key file changed"
    changed = {k for k, v in r.ops.items() if v != {"same"}}
    assert changed == {f"{PROXY_CERT_TYPE}::proxy-client", *(f"{COMMAND_TYPE}::{m}-certs" for m in MASTERS)}, changed
    assert apiservers(s.sb) == base["apiservers"], "an apiserver was restarted"
    seen = wait_probe(s, new_serial)
    assert seen == {m: new_serial for m in MASTERS}, f"{case}: serials presented: {seen}, new {new_serial:x}"
    return new_serial


def test_a_renew_now_bump_renews_the_proxy_cert_without_a_restart(renewal):
    s = renewal
    old = s.require("up")["serial"]
    r = s.up_sampled(lambda: s.stack.write_config({f"{PROJECT}:pki": {"renewNow": "2"}}),
                     settle=lambda: wait_probe(s, s.proxy_serial()))
    s.results["renew-now"] = _check_no_restart_and_new_cert(s, "renewNow", r, old)


def test_the_early_renewal_window_renews_the_proxy_cert_without_a_restart(renewal):
    s = renewal
    old = s.require("renew-now")
    assert _previewed_proxy_cert_ops(s) == {"same"}  # the state still says the certificate is far from its end
    r = s.up_sampled(lambda: s.move_end_into_renewal_window("proxy-client"),
                     settle=lambda: wait_probe(s, s.proxy_serial()))
    s.results["window"] = _check_no_restart_and_new_cert(s, "earlyRenewalHours", r, old)


def _set_renew_now(s: RenewalScenario, value: str | None) -> None:
    """pki.renewNow in the stack's config file: `value`, or no such key (write_config only merges)."""
    doc = yaml.safe_load(s.stack.config_file.read_text())
    pki = doc["config"][f"{PROJECT}:pki"]
    if value is None:
        pki.pop("renewNow", None)
    else:
        pki["renewNow"] = value
    s.stack.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))


def _previewed_proxy_cert_ops(s: RenewalScenario) -> set[str]:
    _, events, _ = s.stack.preview()
    return {e.resource_pre_event.metadata.op.value for e in events if e.resource_pre_event is not None
            and _type_and_name(e.resource_pre_event.metadata.urn) == f"{PROXY_CERT_TYPE}::proxy-client"}


def test_removing_renew_now_or_setting_it_first_renews_nothing(renewal):
    """The engine compares a replacement trigger with the one in state, and a missing one with nothing."""
    s = renewal
    serial = s.require("window")
    _set_renew_now(s, None)
    assert _previewed_proxy_cert_ops(s) == {"same"}
    s.stack.up()
    _set_renew_now(s, "3")  # the first value again: recorded, nothing renewed
    assert _previewed_proxy_cert_ops(s) == {"same"}
    s.stack.up()
    assert s.proxy_serial() == serial
    _set_renew_now(s, "4")  # and from now on each change renews
    assert _previewed_proxy_cert_ops(s) == {"create-replacement", "replace", "delete-replaced"}
    _set_renew_now(s, "3")  # (not applied: the stack stays as it is for the next case)


def _serving(s: RenewalScenario) -> tuple[str, int] | None:
    served = serving_metrics_server(s.sb)
    return None if served is None else (served[0], _serial(served[1]))


def test_a_renewed_serving_cert_rolls_metrics_server_and_the_api_keeps_answering(renewal):
    s = renewal
    s.require("up")
    api = s.sb.api()
    before = api.get(DEPLOYMENT)
    old_pem = _secret_cert(api)
    assert before["spec"]["template"]["metadata"]["annotations"]["checksum/serving-cert"] == \
        hashlib.sha256(old_pem.encode()).hexdigest()
    old_apiservers = apiservers(s.sb)
    served_before = _serving(s)
    assert served_before is not None and served_before[1] == _serial(old_pem)

    def rolled() -> bool:
        # the podrunner writes new Secret bytes under the running process (metrics-server reloads them), as a
        # kubelet does: only the pod template's checksum makes a new process, at the other pod address
        now = _serving(s)
        return now is not None and now[0] != served_before[0] and now[1] == _serial(_secret_cert(api))

    def settle() -> None:
        wait_for(rolled, "a new metrics-server process serving the new cert (the Deployment rolled)", 240, 0.5)
        hm.wait_for_metrics(s.sb, timeout=60)

    r = s.up_sampled(lambda: s.move_end_into_renewal_window("metrics-server-serving-cert"), settle=settle)
    new_pem = _secret_cert(api)
    after = api.get(DEPLOYMENT)
    facts = {"failures": [str(f) for f in r.report.failures], "longest_gap_s": round(r.report.longest_gap_s, 2),
             "samples": r.report.samples, "ops": {k: sorted(v) for k, v in r.ops.items()}}
    (s.tmp / "renewal-serving.json").write_text(json.dumps(facts, indent=1))
    print(f"\nserving cert: {r.report.summary()}")
    assert _serial(new_pem) != _serial(old_pem), "the serving certificate was not renewed"
    # the pod template changed by its checksum alone: that is the rollout
    assert after["spec"]["template"]["metadata"]["annotations"]["checksum/serving-cert"] == \
        hashlib.sha256(new_pem.encode()).hexdigest()
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert r.ops.get("kubernetes:apps/v1:Deployment::metrics-server-deployment") == {"update"}
    served_after = _serving(s)
    # a new process at the other pod address: started beside the old one, which stopped once it was ready
    assert served_after is not None and served_after[1] == _serial(new_pem)
    assert served_after[0] != served_before[0], (served_before, served_after)
    assert apiservers(s.sb) == old_apiservers
    assert r.report.failures == [], r.report.summary()


def _secret_cert(api) -> str:
    return base64.b64decode(api.get(SERVING_SECRET)["data"]["tls.crt"]).decode()
