"""The metrics-aggregation guardrails policy pack: `pulumi preview --policy-pack policy`.

Only wiring lives here: constructing a PolicyPack starts the analyzer server and never returns, so the
policy logic is in aggregation_policies.py, where the unit tests import it (tests/unit/test_policy.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aggregation_policies import PACK_NAME, build_policies  # noqa: E402
from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Guardrails for the Kubernetes aggregation layer: separate requestheader CA, an accepted "
    "proxy-client certificate, strong keys, bounded leaf validity, and on production stacks no "
    "--kubelet-insecure-tls, no insecureSkipTLSVerify and pinned SSH host keys.",
)
