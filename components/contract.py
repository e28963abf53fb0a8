"""The names other code relies on: the host script, the policy pack, tools/ and consumer stacks.

Fixed by the project's contracts (docs/contracts.md): change one and every reader breaks. This module
imports nothing but the standard library, so the policy pack (its own virtualenv) and tools/ can import
it without the Pulumi SDK.
"""

from __future__ import annotations

# Stack config namespace: every key is `metrics-aggregation:<key>`.
NAMESPACE = "metrics-aggregation"

# The three PEM files in apiserver.certDir on every master (0644, 0644, 0600, owned by root).
CA_CERT_FILE = "aggregator-ca.pem"
PROXY_CERT_FILE = "aggregator.pem"
PROXY_KEY_FILE = "aggregator-key.pem"
PEM_FILES = (CA_CERT_FILE, PROXY_CERT_FILE, PROXY_KEY_FILE)

# The kube-apiserver flags this program sets itself, in the order it writes them.
REQUESTHEADER_CLIENT_CA_FILE = "--requestheader-client-ca-file"
REQUESTHEADER_ALLOWED_NAMES = "--requestheader-allowed-names"
REQUESTHEADER_EXTRA_HEADERS_PREFIX = "--requestheader-extra-headers-prefix"
REQUESTHEADER_GROUP_HEADERS = "--requestheader-group-headers"
REQUESTHEADER_USERNAME_HEADERS = "--requestheader-username-headers"
PROXY_CLIENT_CERT_FILE = "--proxy-client-cert-file"
PROXY_CLIENT_KEY_FILE = "--proxy-client-key-file"
ENABLE_AGGREGATOR_ROUTING = "--enable-aggregator-routing"
MANAGED_FLAGS = (
    REQUESTHEADER_CLIENT_CA_FILE,
    REQUESTHEADER_ALLOWED_NAMES,
    REQUESTHEADER_EXTRA_HEADERS_PREFIX,
    REQUESTHEADER_GROUP_HEADERS,
    REQUESTHEADER_USERNAME_HEADERS,
    PROXY_CLIENT_CERT_FILE,
    PROXY_CLIENT_KEY_FILE,
    ENABLE_AGGREGATOR_ROUTING,
)

# Stack outputs. No private key is ever one.
OUTPUT_AGGREGATOR_CA_CERT_PEM = "aggregatorCaCertPem"
OUTPUT_PROXY_CLIENT_CERT_PEM = "proxyClientCertPem"
OUTPUT_PROXY_CLIENT_CERT_NOT_AFTER = "proxyClientCertNotAfter"
OUTPUT_REQUESTHEADER_ALLOWED_NAMES = "requestheaderAllowedNames"
OUTPUT_APISERVER_FLAGS = "apiserverFlags"
OUTPUT_MASTERS = "masters"
OUTPUT_METRICS_API_SERVICE = "metricsApiService"
OUTPUT_METRICS_SERVER_NAMESPACE = "metricsServerNamespace"
OUTPUT_AGGREGATOR_CA_NOT_AFTER = "aggregatorCaNotAfter"
OUTPUT_METRICS_SERVER_SERVING_CA_CERT_PEM = "metricsServerServingCaCertPem"
OUTPUT_METRICS_SERVER_SERVING_CA_NOT_AFTER = "metricsServerServingCaNotAfter"
OUTPUT_METRICS_SERVER_SERVING_CERT_NOT_AFTER = "metricsServerServingCertNotAfter"
OUTPUT_CONTRACT_VERSION = "contractVersion"
# contract 1.3.0: how metrics-server runs, for firewall and NetworkPolicy projects (null with
# metricsServer.manage: false)
OUTPUT_METRICS_SERVER_IMAGE = "metricsServerImage"
OUTPUT_METRICS_SERVER_HOST_NETWORK = "metricsServerHostNetwork"
OUTPUT_METRICS_SERVER_PORT = "metricsServerPort"
OUTPUTS = (
    OUTPUT_AGGREGATOR_CA_CERT_PEM,
    OUTPUT_PROXY_CLIENT_CERT_PEM,
    OUTPUT_PROXY_CLIENT_CERT_NOT_AFTER,
    OUTPUT_REQUESTHEADER_ALLOWED_NAMES,
    OUTPUT_APISERVER_FLAGS,
    OUTPUT_MASTERS,
    OUTPUT_METRICS_API_SERVICE,
    OUTPUT_METRICS_SERVER_NAMESPACE,
    OUTPUT_AGGREGATOR_CA_NOT_AFTER,
    OUTPUT_METRICS_SERVER_SERVING_CA_CERT_PEM,
    OUTPUT_METRICS_SERVER_SERVING_CA_NOT_AFTER,
    OUTPUT_METRICS_SERVER_SERVING_CERT_NOT_AFTER,
    OUTPUT_CONTRACT_VERSION,
    OUTPUT_METRICS_SERVER_IMAGE,
    OUTPUT_METRICS_SERVER_HOST_NETWORK,
    OUTPUT_METRICS_SERVER_PORT,
)
# The *NotAfter outputs: RFC 3339; readers accept fractional seconds and any offset (components/rfc3339.py).
# The value of `contractVersion`, semver over the outputs (docs/contracts.md "Outputs"): major when an
# output is removed or renamed or its meaning or type changes, minor when one is added, patch when only
# the docs change. 1.0.0 was the first eight outputs; 1.1.0 added the expiry times, the serving CA and
# this version; 1.2.0: aggregatorCaCertPem holds two CA certificates during a CA rotation (pki.caRotation),
# so readers take every PEM block; 1.3.0 added metricsServerImage, metricsServerHostNetwork and
# metricsServerPort. A consumer checks the major and that the minor is at least its own.
CONTRACT_VERSION = "1.3.0"

# The component of the aggregator CA (components/pki.py AggregatorCA): its tls PrivateKey and SelfSignedCert
# are the CA that every master trusts as --requestheader-client-ca-file; tools/preview_diff.py finds them by
# this parent type to call out a preview that would replace them.
AGGREGATOR_CA_TYPE = "metrics-aggregation:pki:AggregatorCA"

# The APIService the metrics API is served through (its name is the API's, whoever installed it).
METRICS_API_SERVICE = "v1beta1.metrics.k8s.io"

# The resources the policy pack finds by type and exact logical name, never by parsing command lines.
# The proxy-client certificate: its tls CertRequest and LocallySignedCert both carry this name (its key:
# "<name>-key").
PROXY_CLIENT_CERT_NAME = "proxy-client"
# ApiserverAggregation holds, as its input and output `masters`, what every master's flags step sets: one
# entry per master in rollout order, {"name": <master>, "flagsStep": <the step's logical name>,
# "certDir": <where the PEM files go>, "flags": {<kube-apiserver flag>: <value>}} (empty with
# apiserver.manage: false, when no flag is set).
APISERVER_TYPE = "metrics-aggregation:apiserver:ApiserverAggregation"
APISERVER_MASTERS = "masters"
MASTER_NAME = "name"
MASTER_FLAGS_STEP = "flagsStep"
MASTER_CERT_DIR = "certDir"
MASTER_FLAGS = "flags"
