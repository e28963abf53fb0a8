"""The metrics-aggregation guardrails policy pack: `pulumi preview --policy-pack policy`.

Only wiring lives here: constructing a PolicyPack starts the analyzer server and never returns, so the
policy logic is in aggregation_policies.py, where the unit tests import it (tests/unit/test_policy.py).
The stack's name and config reach the policies as PULUMI_STACK / PULUMI_CONFIG, which the Python language
host sets when it starts the pack (pulumi sdk/python/cmd/pulumi-language-python/main.go RunPlugin).
"""

import os
import sys

# The pack's own modules, and the repository's components/ (contract.py, ca_files.py: standard library and
# cryptography only), which the pack shares with the program instead of copying.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.append(os.path.dirname(_HERE))  # after site-packages: the repo's folders shadow nothing installed

from aggregation_policies import PACK_NAME, build_policies  # noqa: E402
from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Guardrails for the Kubernetes aggregation layer: separate requestheader CA, an accepted "
    "proxy-client certificate, strong keys, bounded leaf validity, and on production stacks no "
    "--kubelet-insecure-tls, no insecureSkipTLSVerify and pinned SSH host keys; no extra apiserver flag that "
    "makes the aggregator CA a client CA, allows anonymous auth or AlwaysAllow, or is denied by the config.",
)
