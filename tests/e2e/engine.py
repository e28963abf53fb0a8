"""The real Pulumi engine for the e2e tier and bench/engine.py: the built toolchain, a per-run copy of
the project and a stack on a throw-away file backend, driven through `pulumi.automation`.

    tc = Toolchain.ensure()                          # builds what is missing; ToolchainError otherwise
    proj = Project.copy(tmp / "project")             # Pulumi.yaml (virtualenv = <repo>/venv), program
    stack = proj.stack(tc, tmp / "backend", "e2e", config, secret_key=...)

Never touches the repo's Pulumi.<stack>.yaml or .pulumi-state: the backend is `file://<tmp>`, the
passphrase is a test passphrase, and the project copy lives in a temp dir. Plugins come from the
toolchain's PULUMI_HOME plugin cache (installed there by `build.sh env`, idempotent).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from lab.proc import run_tree

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "toolchain" / "build.sh"
# the components `pulumi preview/up` of this program needs, and the local control plane of the tier
ENGINE_COMPONENTS = ("pulumi", "python", "tls", "command", "kubernetes")
CONTROL_PLANE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "metrics-server", "kubectl")
PROJECT = "metrics-aggregation"
PASSPHRASE = "e2e-test-passphrase"
LOCALLY_SIGNED_CERT_TYPE = "tls:index/locallySignedCert:LocallySignedCert"
PRIVATE_KEY_RE = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


class ToolchainError(Exception):
    pass


@dataclass
class Toolchain:
    env: dict[str, str]
    bin_dir: Path

    @classmethod
    def ensure(cls, pulumi_home: Path, components: tuple[str, ...] = ENGINE_COMPONENTS + CONTROL_PLANE_COMPONENTS,
               build_timeout: float = 4 * 3600) -> Toolchain:
        """Build what is missing (a no-op when up to date), install the plugins, read the env exports.

        `pulumi_home`: a private PULUMI_HOME (plugin cache, workspace settings) for this run, so that
        nothing another run or `make clean` does to the repo's .pulumi-home can pull plugins away."""
        try:
            p = subprocess.run(["bash", str(BUILD_SH), "build", *components], cwd=REPO, capture_output=True,
                               text=True, timeout=build_timeout)
        except subprocess.TimeoutExpired as e:
            raise ToolchainError(f"`bash toolchain/build.sh build {' '.join(components)}` did not finish in {build_timeout}s") from e
        if p.returncode != 0:
            raise ToolchainError(
                f"the toolchain is missing and could not be built (`bash toolchain/build.sh build {' '.join(components)}` "
                f"-> {p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}"
            )
        env = {**os.environ, "PULUMI_HOME": str(pulumi_home)}
        env.pop("PULUMI_BACKEND_URL", None)
        p = subprocess.run(["bash", str(BUILD_SH), "env"], cwd=REPO, capture_output=True, text=True, timeout=600,
                           env=env)
        if p.returncode != 0:
            raise ToolchainError(f"`bash toolchain/build.sh env` -> {p.returncode}:\n{(p.stdout + p.stderr)[-4000:]}")
        env = parse_exports(p.stdout)
        if env.get("PULUMI_HOME") != str(pulumi_home):
            raise ToolchainError(f"`build.sh env` did not keep PULUMI_HOME={pulumi_home}: {env.get('PULUMI_HOME')}")
        bin_dir = Path(subprocess.run(["bash", str(BUILD_SH), "bin-dir"], cwd=REPO, capture_output=True,
                                      text=True, timeout=60).stdout.strip())
        for b in ("pulumi", "pulumi-language-python", "pulumi-language-python-exec"):
            if not (bin_dir / b).exists():
                raise ToolchainError(f"{bin_dir / b} is missing after the build")
        return cls(env, bin_dir)

    def run_env(self, backend: Path | str) -> dict[str, str]:
        """The engine env for one stack: the toolchain's exports, a private backend (a directory for a file
        backend, or a backend URL such as tools/pg_backend.py's), the test passphrase."""
        env = dict(self.env)
        env["PULUMI_BACKEND_URL"] = backend if isinstance(backend, str) else f"file://{backend}"
        env["PULUMI_CONFIG_PASSPHRASE"] = PASSPHRASE
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        env["PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK"] = "false"
        # The command provider uses the agent in SSH_AUTH_SOCK whenever it is set, next to the stack's
        # private key too, and a dead agent fails every command (pulumi-command connection.go): the tier
        # must not depend on the runner's agent. A test that wants one sets it (test_plugin_command.py).
        env.pop("SSH_AUTH_SOCK", None)
        return env

    def command(self) -> auto.PulumiCommand:
        return auto.PulumiCommand(root=str(self.bin_dir.parent), skip_version_check=False)


def parse_exports(text: str) -> dict[str, str]:
    """`export K='V'` lines (POSIX-quoted) of `build.sh env` -> {K: V}."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        words = shlex.split(line)
        for w in words[1:]:
            k, _, v = w.partition("=")
            env[k] = v
    if "PATH" not in env or "PULUMI_HOME" not in env:
        raise ToolchainError(f"`build.sh env` printed no PATH/PULUMI_HOME export:\n{text[-2000:]}")
    return env


@dataclass
class Project:
    dir: Path

    @classmethod
    def copy(cls, dest: Path, program: str | None = None) -> Project:
        """A copy of the project whose runtime uses the repo's venv by absolute path (nothing installed).

        `program`: a replacement __main__.py (the bench's empty programs); None: the real program."""
        dest.mkdir(parents=True)
        meta = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
        meta["runtime"] = {"name": "python", "options": {"toolchain": "pip", "virtualenv": str(REPO / "venv")}}
        (dest / "Pulumi.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        shutil.copytree(REPO / "components", dest / "components", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "requirements.txt", dest / "requirements.txt")
        if program is None:
            shutil.copy(REPO / "__main__.py", dest / "__main__.py")
        else:
            (dest / "__main__.py").write_text(program)
        return cls(dest)

    def stack(self, tc: Toolchain, backend: Path | str, name: str, config: dict[str, Any] | None = None, *,
              secret_paths: dict[str, str] | None = None) -> E2EStack:
        if isinstance(backend, Path):
            backend.mkdir(parents=True, exist_ok=True)
        env = tc.run_env(backend)
        ws = auto.LocalWorkspace(work_dir=str(self.dir), env_vars=env, pulumi_command=tc.command(),
                                 secrets_provider="passphrase")
        st = auto.Stack.create(name, ws)
        s = E2EStack(self, st, env, backend, name, tc.bin_dir / "pulumi")
        if config:
            s.write_config(config)
        for path, value in (secret_paths or {}).items():
            st.set_config(path, auto.ConfigValue(value=value, secret=True), path=True)
        return s


@dataclass
class E2EStack:
    project: Project
    stack: auto.Stack
    env: dict[str, str]
    backend: Path | str
    name: str
    pulumi_bin: Path
    outputs: list[str] = field(default_factory=list)  # every captured line of preview/up/destroy output

    @property
    def config_file(self) -> Path:
        return self.project.dir / f"Pulumi.{self.name}.yaml"

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the plain config keys (full names, `ns:key`) and keep secure values and the salt."""
        doc = yaml.safe_load(self.config_file.read_text()) if self.config_file.exists() else {}
        doc = doc or {}
        cfg = doc.setdefault("config", {})
        for k, v in config.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                merged = dict(cfg[k])
                merged.update(v)
                cfg[k] = merged
            else:
                cfg[k] = v
        self.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def set_keys(self, key: str, **changes: Any) -> None:
        """Set (a value) or remove (None) fields of the object config `key` (full name, e.g.
        `metrics-aggregation:pki`); write_config only merges, so it cannot remove one."""
        doc = yaml.safe_load(self.config_file.read_text())
        obj = doc["config"].setdefault(key, {})
        for k, v in changes.items():
            if v is None:
                obj.pop(k, None)
            else:
                obj[k] = v
        self.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_file.read_text())["config"]

    def _capture(self, kind: str):
        lines: list[str] = []
        self.outputs.append(f"==== {kind}")

        def on_output(line: str) -> None:
            lines.append(line)
            self.outputs.append(line)

        return lines, on_output

    def up(self, **kw: Any) -> tuple[auto.UpResult, float]:
        _, cb = self._capture("up")
        t = time.monotonic()
        r = self.stack.up(on_output=cb, color="never", **kw)
        return r, time.monotonic() - t

    def preview(self, **kw: Any) -> tuple[auto.PreviewResult, list[auto.EngineEvent], float]:
        events: list[auto.EngineEvent] = []
        _, cb = self._capture("preview")
        t = time.monotonic()
        r = self.stack.preview(on_output=cb, on_event=events.append, color="never", diff=True, **kw)
        return r, events, time.monotonic() - t

    def destroy(self, **kw: Any) -> tuple[auto.DestroyResult, float]:
        _, cb = self._capture("destroy")
        t = time.monotonic()
        r = self.stack.destroy(on_output=cb, color="never", **kw)
        return r, time.monotonic() - t

    def cli(self, *args: str, timeout: float = 120) -> str:
        """The pulumi CLI of the toolchain in this stack's project and backend (e.g. stack export)."""
        p = run_tree([str(self.pulumi_bin), *args, "--stack", self.name],
                     cwd=self.project.dir, env=self.env, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} -> {p.returncode}: {p.stderr[-3000:]}")
        return p.stdout


    def audit(self, *args: str, timeout: float = 900) -> tuple[int, str, str, float]:
        """`python -m tools.audit --stack <stack> ARGS` as `make audit` runs it (the toolchain's env, this
        stack's backend, its project as --cwd) -> (exit status, stdout, stderr, seconds)."""
        t = time.monotonic()
        p = run_tree([str(REPO / "venv" / "bin" / "python"), "-m", "tools.audit", "--stack", self.name,
                      "--cwd", str(self.project.dir), *args],
                     cwd=REPO, env=self.env, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.monotonic() - t

    def move_cert_end(self, name: str, hours_from_now: float, work: Path) -> None:
        """Set the validityEndTime of the LocallySignedCert `name` in the state to `hours_from_now`: what the
        passage of time does to the tls provider's readyForRenewal at Diff (the certificate is untouched)."""
        state = json.loads(self.cli("stack", "export"))
        (res,) = [r for r in state["deployment"]["resources"] if r["type"] == LOCALLY_SIGNED_CERT_TYPE
                  and r["urn"].endswith(f"::{name}")]
        when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours_from_now)
        res["outputs"]["validityEndTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        path = work / f"state-{name}.json"
        path.write_text(json.dumps(state))
        self.cli("stack", "import", "--file", str(path))


def consumer_stack(tc: Toolchain, dest: Path, env: dict[str, str], metrics_stack: str, kubeconfig: Path,
                   name: str = "e2e") -> auto.Stack:
    """examples/hpa-consumer copied to `dest` (the repo's venv by absolute path) as stack `name` on the backend
    and passphrase of `env`, reading the metrics-aggregation stack `metrics_stack` through its StackReference;
    no kubelet in the e2e control planes, so it expects no pods."""
    src = REPO / "examples" / "hpa-consumer"
    dest.mkdir()
    meta = yaml.safe_load((src / "Pulumi.yaml").read_text())
    meta["runtime"]["options"]["virtualenv"] = str(REPO / "venv")
    (dest / "Pulumi.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    for f in ("__main__.py", "hpa_consumer.py"):
        shutil.copy(src / f, dest / f)
    ws = auto.LocalWorkspace(work_dir=str(dest), env_vars=env, pulumi_command=tc.command(), secrets_provider="passphrase")
    consumer = auto.Stack.create(name, ws)
    consumer.set_all_config({
        "hpa-consumer:metricsStack": auto.ConfigValue(metrics_stack),
        "hpa-consumer:expectNoPods": auto.ConfigValue("true"),
        "kubernetes:kubeconfig": auto.ConfigValue(str(kubeconfig)),
    })
    return consumer


def step_ops(events: list[auto.EngineEvent]) -> dict[str, str]:
    """URN -> op of every resource step a preview reported (resource_pre_event)."""
    out: dict[str, str] = {}
    for e in events:
        pre = e.resource_pre_event
        if pre is not None:
            out[pre.metadata.urn] = pre.metadata.op.value if hasattr(pre.metadata.op, "value") else str(pre.metadata.op)
    return out
