"""metrics-aggregation: aggregation layer on self-managed kube-apiservers + metrics-server."""

import pulumi

from components import cluster_probe, config, kube_access, program

try:
    settings = config.load()
    # Read-only, before any resource is registered: a metrics-server that Helm or another install
    # manages stops `up` here, with nothing changed.
    # (metricsServer.manage: false keeps that metrics-server: nothing to check then.)
    kube = kube_access.read_settings() if settings.metrics_server.manage else None
    if kube is not None:
        cluster_probe.preflight(
            settings.metrics_server, kube, dry_run=pulumi.runtime.is_dry_run(), warn=pulumi.log.warn,
        )
except (config.ConfigError, cluster_probe.ProbeError) as err:
    raise pulumi.RunError(str(err)) from None

for name, value in program.build(settings, kube).items():
    pulumi.export(name, value)
