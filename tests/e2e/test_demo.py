"""`make demo`'s script, run for real: sandbox/demo.sh against a sandbox of its own, with the committed
Pulumi.sandbox.yaml moved to that sandbox's block and directory (its encryption salt and the toolchain's
local demo passphrase kept, as `make demo` uses them)."""

from __future__ import annotations

import json
import random
import re
import subprocess

import pytest
import yaml

from sandbox.cluster import DEFAULT_BLOCK, DEFAULT_DIR, NODES, Sandbox, SandboxError
from tests.e2e.engine import REPO, Project, Toolchain
from tests.e2e.test_sandbox import _free_block

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_demo_script_prints_node_metrics_through_the_aggregation_layer(toolchain: Toolchain, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    sb = Sandbox(tmp / "sandbox", _free_block(), f"mas{random.randrange(16**4):04x}", bin_dir=toolchain.bin_dir)
    try:
        try:
            sb.up(log=lambda m: None, timeout=180)
        except SandboxError as e:
            pytest.fail(f"the sandbox did not start: {e}", pytrace=False)
        project = Project.copy(tmp / "project")
        text = (REPO / "Pulumi.sandbox.yaml").read_text()
        text = text.replace(f"198.18.{DEFAULT_BLOCK}.", f"198.18.{sb.block}.").replace(str(DEFAULT_DIR), str(sb.dir))
        (project.dir / "Pulumi.sandbox.yaml").write_text(text)
        env = {k: v for k, v in toolchain.env.items() if k != "PULUMI_BACKEND_URL"}
        env.update(SANDBOX_DIR=str(sb.dir), KUBECTL=str(toolchain.bin_dir / "kubectl"))

        def demo() -> str:
            p = subprocess.run(["bash", str(REPO / "sandbox" / "demo.sh")], cwd=project.dir, env=env,
                               capture_output=True, text=True, timeout=360)
            assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
            return p.stdout

        out = demo()
        assert "✅ metrics-aggregation-guardrails" in out, "the policy pack ran and passed:\n" + out[-3000:]
        body = re.search(r'^\{"kind":"NodeMetricsList".*$', out, re.M)
        assert body, out[-3000:]
        usage = {i["metadata"]["name"]: i["usage"] for i in json.loads(body.group(0))["items"]}
        assert sorted(usage) == sorted(NODES) and usage["sandbox-node-1"]["memory"] == "512Mi", usage
        top = [line.split() for line in out.splitlines() if line.startswith("sandbox-node-")]
        assert [row[0] for row in top] == list(NODES), out[-2000:]
        assert "make sandbox-down" in out
        # the stack file was not rewritten (no secrets were added, the salt is the committed one)
        assert yaml.safe_load((project.dir / "Pulumi.sandbox.yaml").read_text())["encryptionsalt"] == \
            yaml.safe_load(text)["encryptionsalt"]

        again = demo()  # a second `make demo`: nothing to change, the same answers
        assert re.search(r"^\s+\d+ unchanged$", again, re.M) and " created" not in again, again[-3000:]
        assert '"kind":"NodeMetricsList"' in again
    finally:
        sb.down(log=lambda m: None)
