"""tools/preview_diff.py: markdown from `pulumi preview --json`.

The fixtures tests/unit/fixtures/preview-*.json are representative `pulumi preview --json` documents of
this program. Their shape is pulumi/pulumi's PreviewDigest (sdk/go/common/display: PreviewDigest,
PreviewStep, PropertyDiff; written by pkg/backend/display/json.go ShowPreviewDigest): top-level
`config`, `steps` (op, urn, provider, oldState/newState as apitype.ResourceV3, diffReasons,
replaceReasons, detailedDiff {path: {kind, inputDiff}}), `diagnostics` (urn, message, severity),
`duration`, `changeSummary` {op: count}, `maybeCorrupt`. Secret values appear as "[secret]" and
unknown values as the engine's sentinel 04da6b54-80e4-46f7-96ec-b56ff0331ba9, as the CLI writes them.
- preview-update.json: dev stack, masters k8s-master, k8s-master2, k8s-master3 (one name is a prefix
  of the others), cert bundle and flag changes on every master, a proxy-client cert replacement, a
  metrics-server Deployment update, one create, one delete; sames not listed (no --show-sames).
- preview-create.json: a first preview (everything created), no masters in the recorded config.
- preview-failed.json: a preview that failed on a config error, with a warning carrying a PEM block.
- preview-ca-replace.json (written by us from pulumi's step_generator.go): dev stack, pki.caCommonName
  changed on a protected CA: the CA cert's logical replace, the proxy-client cert replaced in turn, one
  certs step updated, and the engine's protection error on the CA.
- preview-engine.json, preview-engine-failed.json: recorded from the real engine (see
  test_recorded_engine_preview, test_recorded_engine_failure).
"""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools import preview_diff as pd  # the repository root is on sys.path (pyproject: pythonpath)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"preview-{name}.json").read_text())


def render(digest: dict, **kw) -> str:
    return pd.render_markdown(pd.summarize(digest, kw.pop("masters", None)), **kw)


# --- the recorded shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["update", "create", "failed", "engine", "engine-failed", "ca-replace"])
def test_fixtures_have_the_preview_digest_shape(name):
    doc = fixture(name)
    assert set(doc) <= {"config", "steps", "diagnostics", "duration", "changeSummary", "maybeCorrupt"}
    for step in doc["steps"]:
        assert set(step) <= {
            "op", "urn", "provider", "oldState", "newState", "diffReasons", "replaceReasons", "detailedDiff",
        }
        assert step["urn"].startswith("urn:pulumi:")
        for key in ("oldState", "newState"):
            if key in step:
                assert step[key]["urn"] == step["urn"] and "type" in step[key]
        for diff in (step.get("detailedDiff") or {}).values():
            assert diff["kind"] in {"add", "add-replace", "delete", "delete-replace", "update", "update-replace"}
            assert isinstance(diff["inputDiff"], bool)
    assert all(isinstance(v, int) for v in doc["changeSummary"].values())


# --- counts and grouping --------------------------------------------------------------------------


def test_update_preview_counts_per_operation():
    md = render(fixture("update"))
    assert "### Pulumi preview: `metrics-aggregation/dev`" in md
    assert "**1 to create, 7 to update, 1 to replace, 1 to delete, 24 unchanged**" in md


def test_update_preview_groups_per_master_in_rollout_order_longest_name_wins():
    md = render(fixture("update"))
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `k8s-master` | 0 | 2 | 0 | 0 | – |",
        "| `k8s-master2` | 0 | 2 | 0 | 0 | – |",
        "| `k8s-master3` | 0 | 2 | 0 | 0 | – |",
        "| `(not master-specific)` | 1 | 1 | 1 | 1 | – |",
    ]
    section = md.split("**`k8s-master`**")[1].split("**`k8s-master2`**")[0]
    assert "k8s-master-certs" in section and "k8s-master-flags" in section
    assert "k8s-master2" not in section
    assert "listed per master only with `pulumi preview --json --show-sames`" in md


def test_update_preview_lists_changed_properties_and_marks_secrets():
    md = render(fixture("update"))
    assert "- update `k8s-master2-certs` (command:remote:Command): `stdin` (secret)" in md
    assert "- update `k8s-master3-flags` (command:remote:Command): `create`, `delete`, `update`" in md
    assert (
        "- replace `proxy-client` (tls:index/locallySignedCert:LocallySignedCert): "
        "`validityPeriodHours` (update-replace)" in md
    )
    assert "`spec.template.spec.containers[0].args[3]`" in md
    assert "- create `metrics-server-pdb` (kubernetes:policy/v1:PodDisruptionBudget)" in md
    assert "- delete `metrics-server-kubelet-ca` (kubernetes:core/v1:ConfigMap)" in md


def test_no_value_is_ever_printed():
    for name in ("update", "create", "failed", "engine", "ca-replace"):
        md = render(fixture(name))
        for value in ("BEGIN", "MIIB", "MIIC", "[secret]", "10.0.0.101", "198.18.0.10", "4380", "8760",
                      "--metric-resolution", "aggregation host script", "04da6b54", "--ready-timeout"):
            assert value not in md, (name, value)


def test_masters_inferred_from_host_step_names_when_config_has_none():
    md = render(fixture("create"))
    assert "**10 to create, 0 to update, 0 to replace, 0 to delete, 0 unchanged**" in md
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert rows[:2] == ["| `master1` | 2 | 0 | 0 | 0 | – |", "| `master2` | 2 | 0 | 0 | 0 | – |"]


def test_explicit_masters_override_the_recorded_config():
    md = render(fixture("update"), masters=["k8s-master3", "k8s-master"])
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| `")]
    # k8s-master2's steps contain "k8s-master" only as a prefix, bounded matching still picks the
    # longest listed name, here k8s-master (k8s-master2 was not listed).
    assert rows == ["`k8s-master3`", "`k8s-master`", "`(not master-specific)`"]


def test_sames_are_counted_per_master_when_listed():
    digest = fixture("update")
    step = copy.deepcopy(next(s for s in digest["steps"] if s["urn"].endswith("::k8s-master-certs")))
    step.update(op="same", diffReasons=None, detailedDiff=None)
    digest["steps"] = [s for s in digest["steps"] if not s["urn"].endswith("::k8s-master-certs")] + [step]
    md = render(digest)
    assert "| `k8s-master` | 0 | 1 | 0 | 0 | 1 |" in md
    assert "| `k8s-master2` | 0 | 2 | 0 | 0 | 0 |" in md
    assert "--show-sames" not in md


def test_replacement_halves_count_once_with_show_replacement_steps():
    digest = fixture("update")
    rep = next(s for s in digest["steps"] if s["op"] == "replace")
    halves = [dict(copy.deepcopy(rep), op=op) for op in ("create-replacement", "delete-replaced")]
    digest["steps"] += halves
    digest.pop("changeSummary")
    summary = pd.summarize(digest)
    assert summary.totals["replace"] == 1
    assert summary.totals["same"] == 1  # only the root stack step is listed
    digest["steps"] = [s for s in digest["steps"] if s["op"] != "replace"]
    assert pd.summarize(digest).totals["replace"] == 2  # only halves: each is shown as a replacement


def test_diff_reasons_used_without_detailed_diff():
    digest = fixture("update")
    for step in digest["steps"]:
        step["detailedDiff"] = None
    md = render(digest)
    assert "- update `k8s-master-flags` (command:remote:Command): `create`, `delete`, `update`" in md
    assert "`validityPeriodHours` (update-replace)" in md
    assert "- update `metrics-server-deployment` (kubernetes:apps/v1:Deployment): `spec`\n" in md


def test_update_without_reasons_falls_back_to_comparing_inputs():
    digest = fixture("update")
    for step in digest["steps"]:
        step.pop("diffReasons", None)
        step.pop("replaceReasons", None)
        step["detailedDiff"] = None
    md = render(digest)
    assert "- update `k8s-master-flags` (command:remote:Command): `create` (from inputs), `delete` (from inputs)" in md
    assert "- update `k8s-master-certs` (command:remote:Command): `stdin` (secret, cannot compare)" in md
    step = next(s for s in digest["steps"] if s["urn"].endswith("::k8s-master-flags"))
    step["newState"]["inputs"] = step["oldState"]["inputs"]
    assert "- update `k8s-master-flags` (command:remote:Command): (the provider did not say which properties)" in render(digest)


def test_recorded_engine_preview():
    """preview-engine.json: recorded with the toolchain's pulumi v3.272.0 (`pulumi preview --json` after
    an `up`), with dynamic-provider stand-ins named like the program's resources (the real providers
    were not built yet); only the machine-specific `stackTrace` entries were removed."""
    digest = fixture("engine")
    assert digest["changeSummary"] == {"create": 1, "delete": 1, "replace": 1, "same": 2, "update": 4}
    md = render(digest)
    assert "**1 to create, 4 to update, 1 to replace, 1 to delete, 2 unchanged**" in md
    assert "| `k8s-master` | 0 | 2 | 0 | 0 | – |" in md
    assert "| `k8s-master2` | 0 | 2 | 0 | 0 | – |" in md
    assert "- replace `proxy-client` (pulumi-python:dynamic:Resource): `validity` (update-replace)" in md
    assert "- update `k8s-master2-certs` (pulumi-python:dynamic:Resource): `bundle` (secret, cannot compare)" in md
    assert "- update `k8s-master2-flags` (pulumi-python:dynamic:Resource): `create` (from inputs)" in md
    assert "__provider" not in md


# --- failures and diagnostics ---------------------------------------------------------------------


def test_failed_preview_shows_errors_redacts_pem_and_exits_1(tmp_path, capsys):
    rc = pd.main([str(FIXTURES / "preview-failed.json"), "--stack", "dev"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "**Preview failed**" in out
    assert "metrics-aggregation:pki.rsaBits: 1024 is below 2048" in out
    assert "[PEM block removed]" in out and "MIIEow" not in out
    assert "Loading policy packs" not in out  # info diagnostics are left out


def test_no_changes_headline():
    digest = {"steps": fixture("failed")["steps"], "changeSummary": {"same": 31}}
    assert "**No changes** (0 to create, 0 to update, 0 to replace, 0 to delete, 31 unchanged)" in render(digest)


def test_maybe_corrupt_is_flagged():
    digest = dict(fixture("create"), maybeCorrupt=True)
    assert "may be corrupt" in render(digest)


def test_reads_stdin_and_tolerates_leading_lines(monkeypatch, capsys):
    text = "Previewing update (dev):\n" + (FIXTURES / "preview-update.json").read_text()
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert pd.main(["-", "--stack", "dev"]) == 0
    assert "7 to update" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "printed nothing"),
        ("error: no stack named 'dev' found\n", "not JSON"),
        ('{"version": 3}', "none of steps/changeSummary/diagnostics"),
    ],
)
def test_bad_input_exits_2_with_a_message(monkeypatch, capsys, text, message):
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert pd.main(["-"]) == 2
    assert message in capsys.readouterr().err


def test_missing_file_exits_2(capsys, tmp_path):
    assert pd.main([str(tmp_path / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- helpers --------------------------------------------------------------------------------------


def test_parse_urn_with_parents_and_colons_in_the_name():
    urn = pd.parse_urn(
        "urn:pulumi:dev::metrics-aggregation::metrics-aggregation:apiserver:ApiserverAggregation"
        "$command:remote:Command::a::b"
    )
    assert urn == pd.Urn(
        "dev", "metrics-aggregation", "command:remote:Command",
        ("metrics-aggregation:apiserver:ApiserverAggregation",), "a::b",
    )
    with pytest.raises(pd.PreviewFormatError):
        pd.parse_urn("not-a-urn")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("k8s-master-flags", "k8s-master"),
        ("k8s-master2-certs", "k8s-master2"),
        ("k8s-master10-flags", "k8s-master10"),
        ("aggregator-ca", None),
        ("readiness-k8s-master3", "k8s-master3"),
    ],
)
def test_master_of(name, expected):
    assert pd.master_of(name, ["k8s-master", "k8s-master2", "k8s-master3", "k8s-master10"]) == expected


def test_module_runs_as_make_runs_it():
    proc = subprocess.run(
        [sys.executable, "-m", "tools.preview_diff", "--stack", "dev", "-"],
        input=(FIXTURES / "preview-update.json").read_text(),
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("### Pulumi preview: `metrics-aggregation/dev`")


def test_recorded_engine_failure(capsys):
    """preview-engine-failed.json: recorded with the toolchain's pulumi v3.272.0: examples/hpa-consumer
    previewed against a metrics-aggregation stack without metricsApiService (StackReference on a shared
    DIY backend); `stackTrace` entries removed."""
    rc = pd.main([str(FIXTURES / "preview-engine-failed.json")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "### Pulumi preview: `hpa-consumer/dev`" in out
    assert "**Preview failed**" in out
    assert "- read `metrics-aggregation` (pulumi:pulumi:StackReference)" in out
    assert "has no output 'metricsApiService'" in out and "Nothing was changed." in out
    assert "Per master" not in out  # no masters in that project


# --- the aggregator CA (pki.protectCa) ------------------------------------------------------------

CA_HEAD = "**This change replaces the aggregator CA**"


def test_protected_ca_replacement_is_called_out_at_the_top_and_refused(capsys):
    rc = pd.main([str(FIXTURES / "preview-ca-replace.json")])
    md = capsys.readouterr().out
    assert rc == 1
    top = md.split("**Preview failed**")[0]
    assert CA_HEAD in top and "(`aggregator-ca`)" in top
    for words in ("every master's requestheader CA changes", "re-signed by the new CA",
                  "every extension apiserver", "The engine refused it: the CA is protected (`pki.protectCa`",
                  "docs/operations.md", "rotation runbook"):
        assert words in top, words
    assert "- replace `aggregator-ca` (tls:index/selfSignedCert:SelfSignedCert): `subject.commonName`" in md


def test_unprotected_ca_replacement_is_called_out_without_a_refusal():
    digest = fixture("ca-replace")
    digest["diagnostics"] = []
    md = render(digest)
    top = md.split("**0 to create")[0]
    assert CA_HEAD in top
    assert "refused" not in md


def test_ca_key_and_cert_as_replacement_halves_are_named_once_each():
    digest = fixture("ca-replace")
    ca = next(s for s in digest["steps"] if s["urn"].endswith("::aggregator-ca"))
    key = copy.deepcopy(ca)
    key["urn"] = ca["urn"].replace("tls:index/selfSignedCert:SelfSignedCert::aggregator-ca",
                                   "tls:index/privateKey:PrivateKey::aggregator-ca-key")
    halves = [dict(copy.deepcopy(s), op=op) for s in (ca, key) for op in ("create-replacement", "delete-replaced")]
    digest["steps"] = [s for s in digest["steps"] if s is not ca] + halves
    digest["diagnostics"] = []
    summary = pd.summarize(digest)
    assert [n for _, n in summary.ca_ending] == ["aggregator-ca", "aggregator-ca-key"]
    assert "(`aggregator-ca`, `aggregator-ca-key`)" in pd.render_markdown(summary)


def test_a_refusal_alone_names_the_ca_and_a_delete_says_deletes():
    digest = fixture("ca-replace")
    digest["steps"] = [s for s in digest["steps"] if s["op"] == "same"]
    ca_urn = digest["diagnostics"][0]["urn"]
    # the delete step's error (step.go deleteProtectedError), reported at the stack, the URN in the text
    digest["diagnostics"] = [{"urn": digest["steps"][0]["urn"], "severity": "error", "message":
                              f'resource "{ca_urn}" cannot be deleted\nbecause it is protected.'}]
    md = render(digest)
    assert CA_HEAD in md and "The engine refused it" in md
    digest = fixture("ca-replace")
    for s in digest["steps"]:
        if s["urn"] == ca_urn:
            s["op"] = "delete"
    digest["diagnostics"] = []
    assert "**This change deletes the aggregator CA**" in render(digest)


def test_no_ca_warning_for_other_certificates_or_other_protection_errors():
    for name in ("update", "create", "failed", "engine", "engine-failed"):
        assert "aggregator CA" not in render(fixture(name)), name  # preview-update replaces proxy-client
    digest = fixture("ca-replace")
    for s in digest["steps"]:  # the same change on metrics-server's serving CA is no aggregator CA
        s["urn"] = s["urn"].replace("metrics-aggregation:pki:AggregatorCA$", "metrics-aggregation:metrics:MetricsServer$")
    digest["diagnostics"][0]["urn"] = digest["diagnostics"][0]["urn"].replace(
        "metrics-aggregation:pki:AggregatorCA$", "metrics-aggregation:metrics:MetricsServer$")
    digest["diagnostics"][0]["message"] = digest["diagnostics"][0]["message"].replace(
        "metrics-aggregation:pki:AggregatorCA$", "metrics-aggregation:metrics:MetricsServer$")
    assert "aggregator CA" not in render(digest)
