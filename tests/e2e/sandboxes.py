"""Sandboxes of the e2e tier and the benchmarks: each on a free block with its own namespace prefix and
directory, never make demo's (sandbox/cluster.py), always torn down."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.proc import children_of
from lab.sampler import ProbeFailed
from sandbox.cluster import MASTERS, NODES, Sandbox, SandboxError, free_block_and_prefix, wait_for
from tests.e2e.engine import PROJECT

METRICS_NODES = "/apis/metrics.k8s.io/v1beta1/nodes"


@contextmanager
def running_sandbox(bin_dir: Path, root: Path, timeout: float = 180) -> Iterator[Sandbox]:
    """A started sandbox under `root` (keep it short: the ssh-agent socket lives there)."""
    block, prefix = free_block_and_prefix()
    sb = Sandbox(root / "sandbox", block, prefix, bin_dir=bin_dir)
    try:
        try:
            sb.up(log=lambda m: None, timeout=timeout)
        except SandboxError as e:
            pytest.fail(f"the sandbox did not start: {e}", pytrace=False)
        yield sb
    finally:
        sb.down(log=lambda m: None)


def sandbox_config(sb: Sandbox) -> dict[str, Any]:
    """Pulumi.sandbox.yaml's config (full keys) moved to this sandbox, the masters' host keys pinned, and
    pki.protectCa false: every e2e stack on a sandbox is destroyed (or torn down by a targeted destroy)
    at its end, which a protected CA refuses; the demo stack keeps the default (sandbox-down drops its state)."""
    config = yaml.safe_load(sb.stack_file_text())["config"]
    config[f"{PROJECT}:pki"] = {**config[f"{PROJECT}:pki"], "protectCa": False}
    keys = sb.host_keys()
    for m in config[f"{PROJECT}:masters"]:
        m["hostKey"] = keys[m["name"]]
    return config


def metrics_api_probes(sb: Sandbox, timeout: float = 2.0) -> dict[str, Callable[[], object]]:
    """One probe per master for lab.sampler.Sampler: GET the NodeMetricsList through that master's
    aggregation layer (no fail-over to another master) and fail unless every node is in it."""
    def probe(name: str) -> Callable[[], object]:
        api = sb.master_api(name)
        api.timeout = timeout

        def call() -> object:
            body = api.get(METRICS_NODES)
            if not body or body.get("kind") != "NodeMetricsList":
                raise ProbeFailed(f"not a NodeMetricsList: {str(body)[:120]}")
            names = {i["metadata"]["name"] for i in body.get("items") or []}
            if names != set(NODES):
                raise ProbeFailed(f"nodes {sorted(names)}, wanted {sorted(NODES)}")
            return body
        return call
    return {m: probe(m) for m in MASTERS}


def earlier(results: dict[str, Any], key: str) -> Any:
    """What an earlier case of an ordered module left under `key`; the case fails, saying why, without it."""
    if key not in results:
        pytest.fail(f"an earlier case did not leave {key!r} (it failed or was deselected); run the module in order",
                    pytrace=False)
    return results[key]


# the EndpointSlice the sandbox's podrunner keeps for metrics-server's Service
METRICS_SERVER_SLICE = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/metrics-server-sandbox"


def serving_metrics_server(sb: Sandbox) -> tuple[str, str] | None:
    """(address, PEM of the certificate served there) of the one metrics-server process the Service's
    EndpointSlice says is ready; None while there is not exactly one (a rolling update moves it to the
    other pod address)."""
    slice_ = sb.api().get(METRICS_SERVER_SLICE)
    ready = [e["addresses"][0] for e in (slice_ or {}).get("endpoints") or [] if e["conditions"].get("ready")]
    if len(ready) != 1:
        return None
    try:
        return ready[0], ssl.get_server_certificate((ready[0], 10250), timeout=3)
    except OSError:
        return None


def metrics_server_argv(sb: Sandbox, timeout: float = 30) -> list[str]:
    """The command line of the metrics-server process the sandbox's podrunner runs (its child; waits while
    a rolling update has two)."""
    def one() -> list[int] | None:
        pids = children_of(sb.state["pids"]["podrunner"])
        return pids if len(pids) == 1 else None

    [pid] = wait_for(one, "one metrics-server process under the podrunner", timeout, 0.5)
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
