"""Refactors keep every URN and every certificate's inputs: a preview of an existing stack shows no change.

fixtures/urns.json holds, for the shipped example stacks (dev, prod, sandbox) and pki.existingCa on a
managed and an unmanaged stack, what the program registered before issue 12's PKI table: every
resource's URN, parent and dependencies, and the inputs of every tls resource (with each PEM replaced by
the name of the resource output it is, so the comparison does not depend on the keys the fakes made).
A resource whose parent or type changes on purpose needs `aliases`, and this test stays as it is.
Regenerate the fixture only for a change that is meant to show in previews:
`python -m tests.unit.test_urns --write`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.program import Run, run
from tests.unit.test_existing_ca import make_ca

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "urns.json"
STACKS = ("dev", "prod", "sandbox", "dev-existing-ca", "prod-existing-ca")
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----\n.*?-----END \1-----\n?", re.DOTALL)


def stack_config(stack: str, ssh_private_key: str) -> dict[str, Any]:
    """The example stack's `metrics-aggregation:*` keys; the secrets and local files it names are given as
    values (the SSH key is set per user, the sandbox's CA files exist only while it runs)."""
    base, _, variant = stack.partition("-")
    data = yaml.safe_load((ROOT / f"Pulumi.{base}.yaml").read_text())["config"]
    cfg = {k.partition(":")[2]: v for k, v in data.items() if k.startswith("metrics-aggregation:")}
    if base == "sandbox":
        cfg["pki"].pop("clusterCaCertFile")
        cfg["pki"]["clusterCaCertPem"] = make_ca(cn="sandbox-cluster-ca").cert_pem
        cfg["metricsServer"].pop("kubeletCaCertFile")
        cfg["metricsServer"]["kubeletCaCertPem"] = make_ca(cn="sandbox-kubelet-ca").cert_pem
    else:
        cfg["ssh"]["privateKey"] = ssh_private_key
    if variant == "existing-ca":
        cfg["pki"]["existingCa"] = make_ca(cn="front-proxy-ca").config()
    return cfg


def _normalised(value: Any, known: dict[str, str]) -> Any:
    """`value` with each PEM replaced by the resource output it is (`<urn>.<output>`), or by its kind."""
    if isinstance(value, dict):
        return {k: _normalised(v, known) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_normalised(v, known) for v in value]
    if isinstance(value, str):
        return _PEM.sub(lambda m: known.get(m.group(0), f"<{m.group(1)} from config>"), value)
    return value


def snapshot(result: Run) -> dict[str, Any]:
    """What a preview compares: URNs, parents, dependencies; the tls resources' inputs and which are secret."""
    known = {  # the PEMs each tls resource outputs (its state also echoes its inputs)
        pem: f"<{r.urn}.{field}>"
        for r in result.resources if r.type.startswith("tls:")
        for field, pem in r.state.items()
        if field.endswith("Pem") and field not in r.inputs and isinstance(pem, str) and pem
    }
    return {
        r.urn: {
            "parent": r.parent,
            "dependencies": sorted(r.dependencies),
            **({"inputs": _normalised(r.inputs, known), "secretInputs": sorted(r.secret_inputs)}
               if r.type.startswith("tls:") else {}),
        }
        for r in result.resources
    }


def evaluate(stack: str, ssh_private_key: str) -> dict[str, Any]:
    return snapshot(run(stack_config(stack, ssh_private_key)))


@pytest.mark.parametrize("stack", STACKS)
def test_urns_and_certificate_inputs_are_unchanged(stack, ssh_private_key):
    before = json.loads(FIXTURE.read_text())[stack]
    now = evaluate(stack, ssh_private_key)
    assert sorted(now) == sorted(before)  # the full URN list: names, types and parents' types
    for urn, registered in before.items():
        assert now[urn] == registered, urn


def _write() -> None:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "unit", "-f", f"{d}/k"], check=True)
        key = Path(f"{d}/k").read_text()
        FIXTURE.write_text(json.dumps({s: evaluate(s, key) for s in STACKS}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    _write()
