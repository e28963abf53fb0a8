"""Evaluate the whole program under Pulumi's mocks and return what it registered.

    run({"masters": [...], "ssh": {...}})  ->  Run(resources, outputs, commands)

Used by the unit tests (graph, certificates, outputs) and by tests/hosts, which executes the exact
remote commands the program built (`Run.commands`) over real SSH.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import set_all_config
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components import config as config_mod
from components import program
from tests.support.mocks import Mocks, RecordingMonitor, Registration

PROJECT = "metrics-aggregation"


@dataclass
class Run:
    resources: list[Registration]
    outputs: dict[str, Any]
    settings: config_mod.Settings

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> Registration:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"{len(matches)} resources named {name!r}"
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.resources if r.urn == urn)

    def ancestors(self, reg: Registration) -> list[Registration]:
        out = []
        while reg.parent and any(r.urn == reg.parent for r in self.resources):  # the Stack is not recorded
            reg = self.by_urn(reg.parent)
            out.append(reg)
        return out

    def depends_on(self, reg: Registration) -> set[str]:
        """URNs this resource waits for: its own dependencies and those of its ancestors."""
        deps = set(reg.dependencies)
        for a in self.ancestors(reg):
            deps |= set(a.dependencies)
        return deps

    def waits_for(self, reg: Registration) -> set[str]:
        """Every URN this resource waits for: directly, through its parents or through other resources."""
        seen: set[str] = set()
        todo = list(self.depends_on(reg))
        while todo:
            urn = todo.pop()
            if urn not in seen:
                seen.add(urn)
                todo.extend(self.depends_on(self.by_urn(urn)))
        return seen

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Every remote.Command with plain resolved values, in rollout order (per master: certs, flags)."""
        by_urn = {r.urn: r.name for r in self.resources}
        order = {m.name: i for i, m in enumerate(self.settings.masters)}

        steps = {"certs": 0, "flags": 1}

        def key(r: Registration) -> tuple[int, int]:
            master, _, step = r.name.rpartition("-")
            return order.get(master, len(order)), steps.get(step, len(steps))

        out = []
        for r in sorted(self.of_type("command:remote:Command"), key=key):
            i = r.inputs
            out.append(
                {
                    "name": r.name,
                    "create": i.get("create"),
                    "update": i.get("update"),
                    "delete": i.get("delete"),
                    "stdin": i.get("stdin"),
                    "connection": i.get("connection"),
                    "depends_on": sorted(by_urn[u] for u in r.dependencies if u in by_urn),
                }
            )
        return out


def with_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with top-level keys replaced, and mapping keys (ssh, pki, ...) merged one level deep."""
    cfg = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def config_values(config: dict[str, Any]) -> dict[str, str]:
    return {f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def run(
    config: dict[str, Any],
    *,
    preview: bool = False,
    stack: str = "test",
    fresh_keys: bool = False,
    record: bool = True,
) -> Run:
    """Evaluate the program with this stack config (the `metrics-aggregation:*` keys, unprefixed).

    `record=False` uses Pulumi's own mock monitor (no per-resource bookkeeping: `Run.resources` is
    empty), for benchmarks that time the program rather than the harness.
    """
    mocks = Mocks(fresh_keys=fresh_keys)
    monitor = RecordingMonitor(mocks) if record else pulumi_mocks.MockMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    set_all_config(config_values(config))
    result: dict[str, Any] = {}

    def body() -> None:
        settings = config_mod.load()
        result["settings"] = settings
        outputs = program.build(settings)
        result["outputs"] = _sync_await(pulumi.Output.from_input(outputs).future())

    try:
        _sync_await(run_pulumi_func(body))
    except Exception as exc:
        exc.registrations = getattr(monitor, "registrations", [])  # type: ignore[attr-defined]
        raise
    return Run(resources=getattr(monitor, "registrations", []), outputs=result["outputs"], settings=result["settings"])
