"""`make demo`'s script, run for real: sandbox/demo.sh against a sandbox of its own, with the committed
Pulumi.sandbox.yaml moved to that sandbox's block and directory (its encryption salt and the toolchain's
local demo passphrase kept, as `make demo` uses them). The metrics-server process the podrunner started
from the Deployment carries the stack's metricsServer.extraArgs, and they are in effect."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from sandbox.cluster import NODES
from tests.e2e.engine import REPO, Project, Toolchain
from tests.e2e.sandboxes import metrics_server_argv, running_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_demo_script_prints_node_metrics_through_the_aggregation_layer(toolchain: Toolchain, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    with running_sandbox(toolchain.bin_dir, tmp) as sb:
        project = Project.copy(tmp / "project")
        text = sb.stack_file_text()
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
        # the Deployment's args end with the stack's extraArgs, and the running process has them, in order,
        # right before what the podrunner adds (the pod address: see sandbox/podrunner.py)
        extra = [f"{flag}={value}" for flag, value in
                 yaml.safe_load(text)["config"]["metrics-aggregation:metricsServer"]["extraArgs"].items()]
        assert "--kubelet-request-timeout=5s" in extra and "-v=2" in extra, extra
        deployment = sb.api().get("/apis/apps/v1/namespaces/kube-system/deployments/metrics-server")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][-len(extra):] == extra
        argv = metrics_server_argv(sb)
        at = argv.index(f"--bind-address={sb.pods_ip}")
        assert argv[at - len(extra):at] == extra, argv
        # -v=2 is in effect: metrics-server logs each node it scrapes only from that level on
        log = (sb.dir / "pods" / "metrics-server" / "metrics-server.log").read_text(errors="replace")
        assert '"Scraping node" node="sandbox-node-1"' in log, log[-2000:]
        # the stack file was not rewritten (no secrets were added, the salt is the committed one)
        assert yaml.safe_load((project.dir / "Pulumi.sandbox.yaml").read_text())["encryptionsalt"] == \
            yaml.safe_load(text)["encryptionsalt"]

        again = demo()  # a second `make demo`: nothing to change, the same answers
        assert re.search(r"^\s+\d+ unchanged$", again, re.M) and " created" not in again, again[-3000:]
        assert '"kind":"NodeMetricsList"' in again
