"""Contract tests of the Python language host stand-in (toolchain/adapters/cmd/pulumi-language-python)
under the real engine: the environment the released host gives programs and policy packs. Each test names
the upstream file it follows. The shipped pack's behaviour on that environment (policy/__main__.py without
any patch of pulumi_policy) is pinned by tests/e2e/test_policy_engine.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.e2e.engine import PROJECT, REPO, E2EStack, Project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PACK_VARIABLES = ("PULUMI_STACK", "PULUMI_PROJECT", "PULUMI_ORGANIZATION", "PULUMI_DRY_RUN", "PULUMI_CONFIG",
                  "PULUMI_CONFIG_SECRET_KEYS")

# A pack whose one advisory policy reports the environment it was started with.
PACK_MAIN = f"""
import json
import os

from pulumi_policy import EnforcementLevel, PolicyPack, StackValidationPolicy


def report(args, report_violation):
    seen = {{k: os.environ.get(k) for k in {PACK_VARIABLES!r}}}
    report_violation("pack-env " + json.dumps(seen, sort_keys=True))


PolicyPack(name="env-probe", enforcement_level=EnforcementLevel.ADVISORY,
           policies=[StackValidationPolicy(name="env-probe", description="reports its environment", validate=report)])
"""

PROGRAM = """
import os
import pulumi

pulumi.export("secretKeysEnv", os.environ.get("PULUMI_CONFIG_SECRET_KEYS"))
pulumi.export("probe", pulumi.Config().require("probe"))
"""


def _env_probe_pack(dest: Path) -> Path:
    dest.mkdir()
    (dest / "PulumiPolicy.yaml").write_text(yaml.safe_dump({
        "description": "reports the environment of a policy pack",
        "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": str(REPO / "venv")}},
        "version": "0.0.1",
    }))
    (dest / "__main__.py").write_text(PACK_MAIN)
    return dest


def _pack_env(output: str) -> dict:
    found = re.findall(r"pack-env (\{.*?\})\s*$", output, re.M)
    assert len(found) == 1, output[-4000:]
    return json.loads(found[0])


@pytest.fixture
def stack(toolchain, tmp_path) -> E2EStack:
    return Project.copy(tmp_path / "project", program=PROGRAM).stack(
        toolchain, tmp_path / "backend", "lang", {f"{PROJECT}:probe": "seen-by-the-pack"})


def test_a_policy_pack_starts_with_the_stacks_environment(stack, tmp_path):
    """pulumi sdk/python/cmd/pulumi-language-python/main.go RunPlugin with sdk/policy_proxy.go: the host
    waits for the engine's ConfigureStack, then starts the pack with PULUMI_ORGANIZATION, PULUMI_PROJECT,
    PULUMI_STACK, PULUMI_DRY_RUN and PULUMI_CONFIG (pulumi-policy sdk/python/lib/pulumi_policy/policy.py
    reads them); it gives a pack no PULUMI_CONFIG_SECRET_KEYS. A preview is a dry run, an update is not."""
    pack = _env_probe_pack(tmp_path / "pack")
    preview = stack.cli("preview", "--non-interactive", "--color", "never", "--policy-pack", str(pack))
    env = _pack_env(preview)
    assert {k: env[k] for k in ("PULUMI_STACK", "PULUMI_PROJECT", "PULUMI_ORGANIZATION", "PULUMI_DRY_RUN")} == {
        "PULUMI_STACK": "lang", "PULUMI_PROJECT": PROJECT, "PULUMI_ORGANIZATION": "organization",
        "PULUMI_DRY_RUN": "true",
    }, env
    assert json.loads(env["PULUMI_CONFIG"])[f"{PROJECT}:probe"] == "seen-by-the-pack", env
    assert env["PULUMI_CONFIG_SECRET_KEYS"] is None, env

    up = stack.cli("up", "--yes", "--skip-preview", "--non-interactive", "--color", "never", "--policy-pack", str(pack))
    assert _pack_env(up)["PULUMI_DRY_RUN"] == "false", up[-3000:]


def test_a_program_gets_an_empty_secret_keys_list_by_default(stack):
    """pulumi sdk/python/cmd/pulumi-language-python/main.go constructConfigSecretKeys: without secret
    config the program's PULUMI_CONFIG_SECRET_KEYS is `[]`, not unset."""
    result, _ = stack.up()
    outputs = {k: v.value for k, v in result.outputs.items()}
    assert outputs == {"secretKeysEnv": "[]", "probe": "seen-by-the-pack"}, outputs
