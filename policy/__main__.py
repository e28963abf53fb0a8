"""The metrics-aggregation guardrails policy pack: `pulumi preview --policy-pack policy`.

Only wiring lives here: constructing a PolicyPack starts the analyzer server and never returns, so the
policy logic is in aggregation_policies.py, where the unit tests import it (tests/unit/test_policy.py).
"""

import json
import os
import sys

# The pack's own modules, and the repository's components/ (contract.py, ca_files.py: standard library and
# cryptography only), which the pack shares with the program instead of copying.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.append(os.path.dirname(_HERE))  # after site-packages: the repo's folders shadow nothing installed

from aggregation_policies import PACK_NAME, build_policies  # noqa: E402
from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402
from pulumi_policy import policy as _policy_runtime  # noqa: E402

# The policies read the stack's config and name from PULUMI_CONFIG / PULUMI_STACK (the environment older
# CLIs give a policy pack). Newer engines (the one `make toolchain` builds) send both only in the
# analyzer's ConfigureStack call, which pulumi_policy 1.21 keeps no more of than the tags: put them where
# the policies look, before the engine asks for any analysis.
_configure_stack = _policy_runtime._PolicyAnalyzerServicer.ConfigureStack


def _configure_stack_keeping_config(self, request, context):
    if request.config:
        os.environ["PULUMI_CONFIG"] = json.dumps(dict(request.config))
    if request.stack:
        os.environ["PULUMI_STACK"] = request.stack
    return _configure_stack(self, request, context)


_policy_runtime._PolicyAnalyzerServicer.ConfigureStack = _configure_stack_keeping_config

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Guardrails for the Kubernetes aggregation layer: separate requestheader CA, an accepted "
    "proxy-client certificate, strong keys, bounded leaf validity, and on production stacks no "
    "--kubelet-insecure-tls, no insecureSkipTLSVerify and pinned SSH host keys; no extra apiserver flag that "
    "makes the aggregator CA a client CA, allows anonymous auth or AlwaysAllow, or is denied by the config.",
)
