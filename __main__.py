"""metrics-aggregation: aggregation layer on self-managed kube-apiservers + metrics-server."""

import pulumi

from components import config, program

try:
    settings = config.load()
except config.ConfigError as err:  # before any resource is registered
    raise pulumi.RunError(str(err)) from None

for name, value in program.build(settings).items():
    pulumi.export(name, value)
