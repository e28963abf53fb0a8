"""Render the output of `pulumi preview --json` as a markdown summary for reviewers.

    pulumi preview --stack dev --json | venv/bin/python -m tools.preview_diff --stack dev -
    venv/bin/python -m tools.preview_diff preview-dev.json

The summary says how many resources are created, updated, replaced, deleted and left alone, the same
counts per master (in rollout order), and for every changed resource which properties change. It never
prints a property value: only property paths and the kind of change (secret inputs are marked as such).

The input is the document `pulumi preview --json` prints: a `PreviewDigest` as defined in pulumi/pulumi
`sdk/go/common/display` (PreviewDigest, PreviewStep, PropertyDiff) and built by
`pkg/backend/display/json.go` (ShowPreviewDigest):

    {"config": {"<ns>:<key>": "<value>", ...},           # secrets blinded as "[secret]"
     "steps": [{"op": "update", "urn": "urn:pulumi:<stack>::<project>::<parent$type>::<name>",
                "provider": "...", "oldState": {...}, "newState": {...},   # apitype.ResourceV3
                "diffReasons": ["create"], "replaceReasons": [...],
                "detailedDiff": {"create": {"kind": "update", "inputDiff": true}}}],
     "diagnostics": [{"urn": "...", "message": "...", "severity": "warning"}],
     "duration": 1234567, "changeSummary": {"create": 1, "update": 2, "same": 20},
     "maybeCorrupt": false}

What that shape implies (same file, `shouldShow`): `same` steps are listed only with `--show-sames`
(changeSummary counts them regardless), and a replacement is one logical `replace` step unless
`--show-replacement-steps` adds the physical `create-replacement`/`delete-replaced` steps.

A preview that would replace (or delete) the aggregator CA's key or certificate, or that the engine refused
because they are protected (pki.protectCa), opens with a warning in plain words: a new CA reaches every
master, the proxy cert and every extension apiserver (docs/operations.md, "The protected aggregator CA").

Resources belong to a master when their name contains the master's name (the program names its host
steps `<master>-certs` and `<master>-flags`); masters come from `--masters`, else from the stack config
recorded in the preview (`metrics-aggregation:masters`), else from the `-certs`/`-flags` names.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from components.contract import AGGREGATOR_CA_TYPE, NAMESPACE

COLUMNS = ("create", "update", "replace", "delete", "same")
# Steps that are the physical halves of a logical replace (shown with --show-replacement-steps).
_REPLACEMENT_HALVES = {"create-replacement", "delete-replaced"}
_HOST_STEP = re.compile(r"^(?P<master>.+)-(script|certs|flags)$")
_SECRET = "[secret]"
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.DOTALL)
_NOT_MASTER = "(not master-specific)"
# The aggregator CA: these tls resources under the AggregatorCA component (its key and its certificate).
_CA_TYPES = {"tls:index/privateKey:PrivateKey", "tls:index/selfSignedCert:SelfSignedCert"}
# Ops that end the CA's life: a logical replace, its physical halves, a delete (e.g. a switch to
# pki.existingCa).
_CA_ENDING_OPS = {"replace", "create-replacement", "delete-replaced", "delete"}
# What the engine says when `protect` stops a replace or delete (pkg/resource/deploy step_generator.go,
# step.go: "unable to replace resource ... marked for protection", "cannot be deleted because it is protected").
_PROTECTED = re.compile(r"marked for protection|because it is protected")
_URN_IN_TEXT = re.compile(r"urn:pulumi:[^\s\"']+")


class PreviewFormatError(ValueError):
    """The input is not the JSON document `pulumi preview --json` prints."""


@dataclass(frozen=True)
class Urn:
    stack: str
    project: str
    type: str  # the resource's own type token, e.g. command:remote:Command
    parent_types: tuple[str, ...]  # the types of its component parents, outermost first
    name: str


def parse_urn(urn: str) -> Urn:
    """Split `urn:pulumi:<stack>::<project>::<qualified type>::<name>` (the name may contain '::')."""
    parts = urn.split("::", 3)
    if len(parts) != 4 or not parts[0].startswith("urn:pulumi:"):
        raise PreviewFormatError(f"not a Pulumi URN: {urn!r}")
    types = parts[2].split("$")
    return Urn(parts[0][len("urn:pulumi:") :], parts[1], types[-1], tuple(types[:-1]), parts[3])


@dataclass(frozen=True)
class PropertyChange:
    path: str
    kind: str  # add, delete, update, and the same with -replace (this property forces a replacement)
    secret: bool = False
    inferred: bool = False  # not reported by the provider: found by comparing old and new inputs

    def render(self) -> str:
        extra = []
        if self.kind != "update":
            extra.append(self.kind)
        if self.secret:
            extra.append("secret, cannot compare" if self.inferred else "secret")
        elif self.inferred:
            extra.append("from inputs")
        return f"`{self.path}`" + (f" ({', '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Change:
    op: str  # a column of COLUMNS or another engine op (read, import, ...)
    type: str
    name: str
    master: str | None
    properties: tuple[PropertyChange, ...] = ()


@dataclass
class Summary:
    stack: str | None
    project: str | None
    totals: Counter = field(default_factory=Counter)
    per_master: dict[str, Counter] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    diagnostics: list[tuple[str, str, str]] = field(default_factory=list)  # severity, resource, message
    sames_listed: bool = False
    maybe_corrupt: bool = False
    ca_ending: list[tuple[str, str]] = field(default_factory=list)  # (op, name) of the aggregator CA's resources
    ca_refused: list[str] = field(default_factory=list)  # CA resources the engine refused (protected)

    @property
    def failed(self) -> bool:
        return any(sev == "error" for sev, _, _ in self.diagnostics)


def load_digest(text: str) -> dict[str, Any]:
    """Parse the preview document; tolerate lines printed before it (e.g. by a wrapper script)."""
    text = text.strip()
    if not text:
        raise PreviewFormatError(
            "no input: `pulumi preview --json` printed nothing (did it fail before the preview? run it "
            "without --json to see why)"
        )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        start = re.search(r"^\{", text, re.MULTILINE)
        if not start:
            raise PreviewFormatError("the input is not JSON; pass the output of `pulumi preview --json`") from None
        try:
            doc = json.loads(text[start.start() :])
        except json.JSONDecodeError as exc:
            raise PreviewFormatError(f"the input is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not ({"steps", "changeSummary", "diagnostics"} & doc.keys()):
        raise PreviewFormatError(
            "the JSON has none of steps/changeSummary/diagnostics; pass the output of `pulumi preview --json`"
        )
    return doc


def masters_from_config(config: Mapping[str, Any] | None) -> list[str]:
    """Master names in rollout order from the stack config recorded in the preview, if present."""
    raw = (config or {}).get(f"{NAMESPACE}:masters")
    if raw is None or raw == _SECRET:
        return []
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return []
    if not isinstance(value, list):
        return []
    return [m["name"] for m in value if isinstance(m, dict) and isinstance(m.get("name"), str)]


def masters_from_steps(names: Iterable[str]) -> list[str]:
    found: list[str] = []
    for name in names:
        m = _HOST_STEP.match(name)
        if m and m["master"] not in found:
            found.append(m["master"])
    return found


def master_of(resource_name: str, masters: Sequence[str]) -> str | None:
    """The master a resource belongs to: the longest master name contained in the resource name.

    Longest wins so that `k8s-master2-flags` belongs to `k8s-master2`, not to `k8s-master`. A match on
    `-`-separated boundaries is preferred over a plain substring.
    """
    bounded = [
        m
        for m in masters
        if re.search(rf"(^|[-_.]){re.escape(m)}($|[-_.])", resource_name)
    ]
    candidates = bounded or [m for m in masters if m in resource_name]
    return max(candidates, key=len) if candidates else None


def _lookup(state: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a detailedDiff path (`a.b[0]["c.d"]`) in a state's inputs; None when absent."""
    if not state:
        return None
    node: Any = state.get("inputs") or {}
    for token in re.findall(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|([^.\[\]]+)', path):
        key, index, plain = token
        if index:
            if not isinstance(node, list) or int(index) >= len(node):
                return None
            node = node[int(index)]
        else:
            if not isinstance(node, Mapping):
                return None
            node = node.get(key or plain)
        if node == _SECRET:
            return _SECRET
    return node


def _properties(step: Mapping[str, Any]) -> tuple[PropertyChange, ...]:
    old, new = step.get("oldState"), step.get("newState")

    def secret(path: str) -> bool:
        return _lookup(new, path) == _SECRET or _lookup(old, path) == _SECRET

    detailed = step.get("detailedDiff")
    changes: dict[str, PropertyChange] = {}
    if isinstance(detailed, Mapping) and detailed:
        for path, diff in detailed.items():
            kind = diff.get("kind", "update") if isinstance(diff, Mapping) else "update"
            changes[path] = PropertyChange(path, kind, secret(path))
    else:
        replace = set(step.get("replaceReasons") or [])
        for path in list(step.get("diffReasons") or []) + sorted(replace):
            if path not in changes:
                kind = "update-replace" if path in replace else "update"
                changes[path] = PropertyChange(path, kind, secret(path))
    if not changes:
        changes = _inferred_changes(old, new)
    return tuple(changes[p] for p in sorted(changes))


def _inferred_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, PropertyChange]:
    """When the provider reports no diff keys (e.g. dynamic providers), compare top-level inputs.

    Secret inputs are blinded in both states, so they cannot be compared: they are listed as
    candidates, marked as such. Engine-internal keys (`__provider`, ...) are left out.
    """
    before = (old or {}).get("inputs") or {}
    after = (new or {}).get("inputs") or {}
    out: dict[str, PropertyChange] = {}
    for key in sorted(set(before) | set(after)):
        if key.startswith("__"):
            continue
        a, b = before.get(key), after.get(key)
        if a == _SECRET or b == _SECRET:
            out[key] = PropertyChange(key, "update", secret=True, inferred=True)
        elif key not in before:
            out[key] = PropertyChange(key, "add", inferred=True)
        elif key not in after:
            out[key] = PropertyChange(key, "delete", inferred=True)
        elif a != b:
            out[key] = PropertyChange(key, "update", inferred=True)
    return out


def is_aggregator_ca(urn: Urn) -> bool:
    """The aggregator CA's key or certificate (directly under the AggregatorCA component)."""
    return urn.type in _CA_TYPES and urn.parent_types[-1:] == (AGGREGATOR_CA_TYPE,)


def _refused_ca(urn_text: str | None, message: str) -> str | None:
    """The CA resource a protection error is about: the diagnostic's URN or the first URN in its message."""
    if not _PROTECTED.search(message):
        return None
    for text in ([urn_text] if urn_text else []) + _URN_IN_TEXT.findall(message):
        try:
            urn = parse_urn(text)
        except PreviewFormatError:
            continue
        if is_aggregator_ca(urn):
            return urn.name
    return None


def summarize(digest: Mapping[str, Any], masters: Sequence[str] | None = None) -> Summary:
    steps = [s for s in digest.get("steps") or [] if isinstance(s, Mapping) and s.get("urn")]
    parsed = [(s, parse_urn(s["urn"])) for s in steps]
    real = [(s, u) for s, u in parsed if u.type != "pulumi:pulumi:Stack"]
    if not masters:
        masters = masters_from_config(digest.get("config")) or masters_from_steps(u.name for _, u in real)
    first = parsed[0][1] if parsed else None
    summary = Summary(first.stack if first else None, first.project if first else None)
    summary.per_master = {m: Counter() for m in masters}
    summary.maybe_corrupt = bool(digest.get("maybeCorrupt"))

    logical_replaces = {s["urn"] for s, _ in real if s.get("op") == "replace"}
    from_steps: Counter = Counter()
    for step, urn in real:
        op = step.get("op", "")
        if op in _REPLACEMENT_HALVES:
            if step["urn"] in logical_replaces:
                continue
            op = "replace"
        if step.get("op") in _CA_ENDING_OPS and is_aggregator_ca(urn):
            entry = (op, urn.name)
            if entry not in summary.ca_ending:
                summary.ca_ending.append(entry)
        master = master_of(urn.name, masters)
        from_steps[op] += 1
        summary.per_master.setdefault(master or _NOT_MASTER, Counter())[op] += 1
        if op == "same":
            summary.sames_listed = True
            continue
        props = _properties(step) if op in ("update", "replace") else ()
        summary.changes.append(Change(op, urn.type, urn.name, master, props))

    change_summary = digest.get("changeSummary")
    if isinstance(change_summary, Mapping) and change_summary:
        summary.totals = Counter({k: int(v) for k, v in change_summary.items() if isinstance(v, int)})
    else:
        summary.totals = from_steps
        # The root stack step is always listed; count it like the engine does.
        for step, urn in parsed:
            if urn.type == "pulumi:pulumi:Stack":
                summary.totals[step.get("op", "same")] += 1

    for diag in digest.get("diagnostics") or []:
        severity = str(diag.get("severity", "info"))
        if severity not in ("error", "warning"):
            continue
        where = parse_urn(diag["urn"]).name if diag.get("urn") else ""
        refused = _refused_ca(diag.get("urn"), str(diag.get("message", "")))
        if refused and refused not in summary.ca_refused:
            summary.ca_refused.append(refused)
        summary.diagnostics.append((severity, where, _clean_message(str(diag.get("message", "")))))
    return summary


def _clean_message(message: str, limit: int = 1000) -> str:
    """One paragraph of a diagnostic, without key material and without markdown-breaking newlines."""
    text = _PEM.sub("[PEM block removed]", message).strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _headline(totals: Counter) -> str:
    words = {"create": "to create", "update": "to update", "replace": "to replace", "delete": "to delete"}
    parts = [f"{totals.get(op, 0)} {words[op]}" for op in ("create", "update", "replace", "delete")]
    parts.append(f"{totals.get('same', 0)} unchanged")
    others = sorted(k for k in totals if k not in COLUMNS and totals[k])
    parts += [f"{totals[k]} {k}" for k in others]
    return ", ".join(parts)


def ca_warning(summary: Summary) -> list[str]:
    """The plain-words warning that opens the summary when the aggregator CA would be replaced or deleted."""
    if not summary.ca_ending and not summary.ca_refused:
        return []
    names = list(dict.fromkeys([n for _, n in summary.ca_ending] + summary.ca_refused))
    deleted_only = summary.ca_ending and all(op == "delete" for op, _ in summary.ca_ending)
    verb = "deletes" if deleted_only else "replaces"
    out = [
        f"> :rotating_light: **This change {verb} the aggregator CA** "
        f"({', '.join(f'`{n}`' for n in names)}). A new CA is a CA rotation, not a routine update:",
        "> - every master's requestheader CA changes (`--requestheader-client-ca-file`, `aggregator-ca.pem`);",
        "> - the proxy-client certificate is re-signed by the new CA;",
        "> - every extension apiserver (metrics-server and any other) must get the new CA "
        "(`extension-apiserver-authentication`) before it trusts the apiservers' proxied requests again.",
        ">",
    ]
    if summary.ca_refused:
        out.append("> The engine refused it: the CA is protected (`pki.protectCa`, default true), so this preview "
                   "fails and `pulumi up` would change nothing.")
    out.append("> See docs/operations.md, \"The protected aggregator CA\", and the CA rotation runbook (issue 13) "
               "before setting `pki.protectCa: false`.")
    return out + [""]


def render_markdown(summary: Summary, stack: str | None = None) -> str:
    stack = stack or summary.stack or "?"
    title = f"{summary.project}/{stack}" if summary.project else stack
    out: list[str] = [f"### Pulumi preview: `{title}`", ""]
    out += ca_warning(summary)
    changed = sum(summary.totals.get(op, 0) for op in COLUMNS if op != "same") + sum(
        v for k, v in summary.totals.items() if k not in COLUMNS
    )
    if summary.failed:
        out.append(f"**Preview failed** (planned before the failure: {_headline(summary.totals)})")
    elif changed:
        out.append(f"**{_headline(summary.totals)}**")
    else:
        out.append(f"**No changes** ({_headline(summary.totals)})")
    out.append("")
    if summary.failed:
        out += ["> :x: see the errors below.", ""]
    if summary.maybe_corrupt:
        out += ["> :warning: the engine reports that one or more resources may be corrupt.", ""]

    extra_ops = sorted({op for c in summary.per_master.values() for op in c if op not in COLUMNS})
    columns = list(COLUMNS) + extra_ops
    rows = [(m, c) for m, c in summary.per_master.items() if m != _NOT_MASTER]
    if _NOT_MASTER in summary.per_master:
        rows.append((_NOT_MASTER, summary.per_master[_NOT_MASTER]))
    if any(m != _NOT_MASTER for m, _ in rows):
        out.append("#### Per master (rollout order)")
        out.append("")
        out.append("| master | " + " | ".join(columns) + " |")
        out.append("|---|" + "---:|" * len(columns))
        for master, counts in rows:
            cells = [str(counts.get(op, 0)) if (op != "same" or summary.sames_listed) else "–" for op in columns]
            out.append(f"| `{master}` | " + " | ".join(cells) + " |")
        out.append("")
        if not summary.sames_listed and summary.totals.get("same"):
            out += ["Unchanged resources are listed per master only with `pulumi preview --json --show-sames`.", ""]

    if summary.changes:
        out.append("#### Changes")
        by_master: dict[str, list[Change]] = {}
        for change in summary.changes:
            by_master.setdefault(change.master or _NOT_MASTER, []).append(change)
        order = [m for m, _ in rows if m in by_master] + [m for m in by_master if m not in dict(rows)]
        for master in order:
            out += ["", f"**{master}**" if master == _NOT_MASTER else f"**`{master}`**", ""]
            for change in by_master[master]:
                line = f"- {change.op} `{change.name}` ({change.type})"
                if change.properties:
                    line += ": " + ", ".join(p.render() for p in change.properties)
                elif change.op in ("update", "replace"):
                    line += ": (the provider did not say which properties)"
                out.append(line)
        out.append("")

    if summary.diagnostics:
        out += ["#### Errors and warnings", ""]
        for severity, where, message in summary.diagnostics:
            prefix = f"`{where}`: " if where else ""
            out.append(f"- **{severity}** {prefix}{message}")
        out.append("")
    out.append("<sub>Values are never shown: only property paths. Rendered by `tools/preview_diff.py` "
               "from `pulumi preview --json`.</sub>")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.preview_diff",
        description="Render `pulumi preview --json` as a markdown summary (counts per operation and per "
        "master, changed property paths; never values).",
    )
    parser.add_argument("input", help="a file holding the output of `pulumi preview --json`, or - for stdin")
    parser.add_argument("--stack", help="the stack name shown in the title (default: from the URNs)")
    parser.add_argument("--masters", help="comma-separated master names in rollout order (default: from the "
                        "stack config recorded in the preview)")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.input == "-" else open(args.input, encoding="utf-8").read()
    except OSError as exc:
        print(f"preview_diff: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        digest = load_digest(text)
        masters = [m.strip() for m in args.masters.split(",") if m.strip()] if args.masters else None
        summary = summarize(digest, masters)
    except PreviewFormatError as exc:
        print(f"preview_diff: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render_markdown(summary, args.stack))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
