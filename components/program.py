"""The whole program as one function: the four components in one dependency graph, and the outputs.

    AggregatorCA ─► ProxyClientCert ─► ApiserverAggregation (certs ∥, flags master1 → master2 → …)
                                              └─► MetricsServer (after every master) ─► APIService Available

With apiserver.manage: false, ApiserverAggregation only verifies every master (read-only, in parallel) and
no certificate is made.

`__main__.py` calls `build` with the validated stack config and exports what it returns; the tests
call it the same way under Pulumi's mocks.
"""

from __future__ import annotations

from components import contract as c
from components.apiserver import ApiserverAggregation
from components.ca_rotation import Cas
from components.config import Settings
from components.kube_access import KubeSettings
from components.metrics_server import MetricsServer
from components.pki import AGGREGATOR_CA, AggregatorCA, ProxyClientCert, requestheader_allowed_names


def build(settings: Settings, kube: KubeSettings | None = None) -> dict[str, object]:
    """Register every resource; return the stack outputs (docs/contracts.md "Outputs"). `kube`: the
    stack's `kubernetes:*` settings, when the caller has read them already (else metrics-server reads them)."""
    if not settings.apiserver.manage:
        return _verify_only(settings, kube)
    cas = Cas(settings, kube)  # pki.caGeneration's CA (two during a rotation; components/ca_rotation.py)
    proxy = ProxyClientCert(c.PROXY_CLIENT_CERT_NAME, settings, cas.signer)
    apiserver = ApiserverAggregation(
        "apiserver",
        settings,
        ca_cert_pem=cas.cert_pem,
        proxy_cert_pem=proxy.cert_pem,
        proxy_key_pem=proxy.private_key_pem,
    )
    cas.finish(apiserver.certs_steps, apiserver.done)
    metrics = _metrics_server(settings, apiserver, kube)
    return _outputs(settings, apiserver, metrics, ca=cas, proxy=proxy)


def _verify_only(settings: Settings, kube: KubeSettings | None) -> dict[str, object]:
    """apiserver.manage: false: the apiservers keep their own aggregation CA, cert and flags (kubeadm's
    front-proxy, a hand-made setup). No certificate is made; every master is checked, read-only, and
    metrics-server follows. The CA output is pki.existingCa's certificate when the stack gives it."""
    ca = AggregatorCA(AGGREGATOR_CA, settings) if settings.pki.existing_ca else None
    apiserver = ApiserverAggregation("apiserver", settings)
    metrics = _metrics_server(settings, apiserver, kube)
    return _outputs(settings, apiserver, metrics, ca=ca, proxy=None)


def _metrics_server(settings: Settings, apiserver: ApiserverAggregation,
                    kube: KubeSettings | None) -> MetricsServer | None:
    """metrics-server after every master; none with metricsServer.manage: false (one that Helm or another
    tool installed serves the metrics API, and keeps doing so). `apiserver.done` is the last flags step
    (the steps form a chain: an edge to each would make the SDK's cycle check quadratic in the number of
    masters) or, unmanaged, every master's read-only verify step."""
    if not settings.metrics_server.manage:
        return None
    return MetricsServer("metrics-server", settings.metrics_server, depends_on=apiserver.done, kube=kube)


def _outputs(settings: Settings, apiserver: ApiserverAggregation, metrics: MetricsServer | None, *,
             ca: AggregatorCA | Cas | None, proxy: ProxyClientCert | None) -> dict[str, object]:
    return {
        c.OUTPUT_CONTRACT_VERSION: c.CONTRACT_VERSION,
        # what the masters trust: both CAs' certificates during a rotation
        c.OUTPUT_AGGREGATOR_CA_CERT_PEM: ca.cert_pem if ca else None,
        # the newest CA's; with pki.existingCa: the given certificate's notAfter
        c.OUTPUT_AGGREGATOR_CA_NOT_AFTER: ca.not_after if ca else None,
        c.OUTPUT_PROXY_CLIENT_CERT_PEM: proxy.cert_pem if proxy else None,
        c.OUTPUT_PROXY_CLIENT_CERT_NOT_AFTER: proxy.not_after if proxy else None,
        c.OUTPUT_REQUESTHEADER_ALLOWED_NAMES: requestheader_allowed_names(settings),
        c.OUTPUT_APISERVER_FLAGS: apiserver.flags,
        c.OUTPUT_MASTERS: [{"name": m.name, "address": m.address} for m in settings.masters],
        # without our metrics-server the APIService of the kept one has the same name (it is the API's)
        c.OUTPUT_METRICS_API_SERVICE: metrics.api_service_name if metrics else c.METRICS_API_SERVICE,
        # unmanaged: metricsServer.namespace, which such a stack sets to where the kept one runs
        c.OUTPUT_METRICS_SERVER_NAMESPACE: metrics.namespace if metrics else settings.metrics_server.namespace,
        # the kept metrics-server's serving certificate is not ours to know: null
        c.OUTPUT_METRICS_SERVER_SERVING_CA_CERT_PEM: metrics.serving_ca_cert_pem if metrics else None,
        c.OUTPUT_METRICS_SERVER_SERVING_CA_NOT_AFTER: metrics.serving_ca_not_after if metrics else None,
        c.OUTPUT_METRICS_SERVER_SERVING_CERT_NOT_AFTER: metrics.serving_cert_not_after if metrics else None,
        # how the kept one runs is not this program's to know either
        c.OUTPUT_METRICS_SERVER_IMAGE: metrics.image if metrics else None,
        c.OUTPUT_METRICS_SERVER_HOST_NETWORK: metrics.host_network if metrics else None,
        c.OUTPUT_METRICS_SERVER_PORT: metrics.port if metrics else None,
    }
