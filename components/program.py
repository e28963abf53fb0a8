"""The whole program as one function: the four components in one dependency graph, and the outputs.

    AggregatorCA ─► ProxyClientCert ─► ApiserverAggregation (certs ∥, flags master1 → master2 → …)
                                              └─► MetricsServer (after every master) ─► APIService Available

`__main__.py` calls `build` with the validated stack config and exports what it returns; the tests
call it the same way under Pulumi's mocks.
"""

from __future__ import annotations

from components.apiserver import ApiserverAggregation
from components.config import Settings
from components.metrics_server import MetricsServer
from components.pki import AggregatorCA, ProxyClientCert


def build(settings: Settings) -> dict[str, object]:
    """Register every resource; return the stack outputs (design.md "Outputs": the contract)."""
    ca = AggregatorCA("aggregator-ca", settings.pki)
    ips, dns = settings.cert_sans()
    proxy = ProxyClientCert("proxy-client", settings.pki, ca, ip_addresses=ips, dns_names=dns)
    apiserver = ApiserverAggregation(
        "apiserver",
        settings,
        ca_cert_pem=ca.cert_pem,
        proxy_cert_pem=proxy.cert_pem,
        proxy_key_pem=proxy.private_key_pem,
    )
    # One edge to the last flags step covers every master (the steps form a chain); an edge to each
    # would make the SDK's cycle check quadratic in the number of masters.
    metrics = MetricsServer("metrics-server", settings.metrics_server, depends_on=[apiserver.done])
    return {
        "aggregatorCaCertPem": ca.cert_pem,
        "proxyClientCertPem": proxy.cert_pem,
        "proxyClientCertNotAfter": proxy.not_after,
        "requestheaderAllowedNames": settings.requestheader_allowed_names,
        "apiserverFlags": apiserver.flags,
        "masters": [{"name": m.name, "address": m.address} for m in settings.masters],
        "metricsApiService": metrics.api_service_name,
        "metricsServerNamespace": metrics.namespace,
    }
