"""docs/plugins.md stays true: its tables of plugin behaviours are parsed row by row. Every row names its
upstream source (repository and path, or an issue/PR), every file it says the program relies on exists,
and every test it cites as `path::name` exists and defines that test (a Python test function, or a Go
`func TestX(t *testing.T)`). A row without a test says so and is listed in the "unproven" section.

A `(pinned at merge)` cell fails its row on purpose: the contract tests of issue 16 are written on other
branches, and the cell must be replaced by their `path::name` when they are merged."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"

COLUMNS = ["id", "behaviour", "upstream", "relied on in", "pinned by"]
PINNED_AT_MERGE = "(pinned at merge)"
NOT_PINNED = "(not pinned: see below)"
UNPROVEN_HEADING = "## What remains unproven without the released binaries"
# the upstream repositories a row may cite; longest first, so `pulumi-policy` is not read as `pulumi`
UPSTREAM_REPOS = sorted(
    ["pulumi-command", "pulumi-go-provider", "pulumi-tls", "terraform-provider-tls", "pulumi",
     "pulumi-policy", "pulumi-kubernetes", "pulumi-terraform-bridge"],
    key=len, reverse=True,
)
_UPSTREAM = re.compile(rf"({'|'.join(map(re.escape, UPSTREAM_REPOS))})\s+(.+)", re.S)
_UPSTREAM_PATH = re.compile(r"`[^`\s]+/[^`\s]+`")  # a backticked path inside the repository
_UPSTREAM_THREAD = re.compile(r"(?:issue|PR)?\s*#\d+")  # pulumi-tls issue #39, PR #4278
_CELL_SPLIT = re.compile(r"(?<!\\)\|")  # `\|` inside a cell is a literal bar
_BACKTICKED = re.compile(r"`([^`]+)`")
_TEST_REF = re.compile(r"`([^`\s:]+)::([A-Za-z_]\w*(?:::[A-Za-z_]\w*)?)`")
_GO_TEST = re.compile(r"^func (Test\w+)\(t \*testing\.T\)", re.M)
_PATH_LIKE = re.compile(r"^[\w.-]+(?:/[\w.-]+)*\.(?:py|sh|go|yaml|yml|md|txt|toml|json)$|^[\w.-]+(?:/[\w.-]+)+/?$")


class TableError(ValueError):
    """docs/plugins.md has a table this parser cannot read."""


@dataclass(frozen=True)
class Row:
    line: int  # 1-based, in the document
    id: str
    behaviour: str
    upstream: str
    relied_on: str
    pinned_by: str


def _cells(line: str, lineno: int) -> list[str]:
    text = line.strip()
    if not (text.startswith("|") and text.endswith("|")):
        raise TableError(f"docs/plugins.md:{lineno}: a table line must start and end with `|`: {line!r}")
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(text[1:-1])]


def parse(text: str) -> list[Row]:
    """Every row of every behaviour table (header `| id | behaviour | upstream | relied on in | pinned by |`)."""
    rows: list[Row] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith("|"):
            i += 1
            continue
        header = [c.lower() for c in _cells(lines[i], i + 1)]
        if header != COLUMNS:
            raise TableError(f"docs/plugins.md:{i + 1}: a table's columns must be {COLUMNS}, not {header}")
        if i + 1 >= len(lines) or not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            raise TableError(f"docs/plugins.md:{i + 2}: the header must be followed by a `|---|` line")
        i += 2
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            cells = _cells(lines[i], i + 1)
            if len(cells) != len(COLUMNS):
                raise TableError(f"docs/plugins.md:{i + 1}: {len(cells)} cells, expected {len(COLUMNS)} "
                                 f"(a literal `|` in a cell is written `\\|`)")
            rows.append(Row(i + 1, *cells))
            i += 1
    return rows


def _test_names(path: Path) -> set[str]:
    """The tests a file defines: `name` and `Class::name` for Python, `TestX` for Go."""
    if path.suffix == ".go":
        return set(_GO_TEST.findall(path.read_text())) if path.name.endswith("_test.go") else set()
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{f.name}" for f in node.body
                      if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name.startswith("test")}
    return names


def _unproven_section(text: str) -> str:
    return text.split(UNPROVEN_HEADING, 1)[1].split("\n## ", 1)[0] if UNPROVEN_HEADING in text else ""


def problems(row: Row, root: Path, doc_text: str) -> list[str]:
    """What is wrong with one row, one line each (empty: the row is true)."""
    where = f"docs/plugins.md:{row.line} ({row.id})"
    out: list[str] = []
    if not re.fullmatch(r"[A-Z]\d+", row.id):
        out.append(f"{where}: the id must be a letter and a number, like C1, not {row.id!r}")
    if not row.behaviour:
        out.append(f"{where}: the behaviour is empty")

    # upstream: one or more `<repository> <path or thread>` separated by `;`
    refs = [s.strip() for s in row.upstream.split(";") if s.strip()]
    if not refs:
        out.append(f"{where}: no upstream source; name the repository and the file (or issue/PR) it follows")
    for ref in refs:
        m = _UPSTREAM.match(ref)
        if not m:
            out.append(f"{where}: upstream {ref!r} does not start with a known repository {UPSTREAM_REPOS}")
        elif not (_UPSTREAM_PATH.search(m.group(2)) or _UPSTREAM_THREAD.search(m.group(2))):
            out.append(f"{where}: upstream {ref!r} names no `path/in/the/repository` and no issue or PR #")

    # relied on in: the program's files, which must exist
    files = [t for t in _BACKTICKED.findall(row.relied_on) if _PATH_LIKE.match(t)]
    if not files:
        out.append(f"{where}: `relied on in` names no file of this repository")
    out += [f"{where}: `relied on in` names {f}, which does not exist" for f in files if not (root / f).exists()]

    # pinned by: `path::name` entries, or one of the two markers, separated by <br>
    entries = [e.strip() for e in row.pinned_by.split("<br>") if e.strip()]
    if not entries:
        out.append(f"{where}: `pinned by` is empty; cite the test as `path::test_name`")
    for entry in entries:
        if entry == PINNED_AT_MERGE:
            out.append(f"{where}: `pinned by` still says {PINNED_AT_MERGE}: replace it with the `path::test_name` "
                       "of the contract or unit test that pins this behaviour (from the merged branches)")
            continue
        if entry == NOT_PINNED:
            if len(entries) > 1:
                out.append(f"{where}: {NOT_PINNED} next to a test: drop the marker or the test")
            elif not re.search(rf"\b{re.escape(row.id)}\b", _unproven_section(doc_text)):
                out.append(f"{where}: {NOT_PINNED} but the section {UNPROVEN_HEADING[3:]!r} does not name {row.id}")
            continue
        m = _TEST_REF.fullmatch(entry)
        if not m:
            out.append(f"{where}: unreadable `pinned by` entry {entry!r}; write `path::test_name`, "
                       f"{PINNED_AT_MERGE} or {NOT_PINNED}")
            continue
        path, name = m.groups()
        file = root / path
        if not file.is_file():
            out.append(f"{where}: {path} does not exist (cited as {entry})")
        elif file.suffix not in (".py", ".go"):
            out.append(f"{where}: {path} is not a Python or Go test file")
        elif name not in _test_names(file):
            out.append(f"{where}: {path} defines no test {name}")
    return out


DOC_TEXT = DOC.read_text()
try:
    ROWS, PARSE_ERROR = parse(DOC_TEXT), None
except TableError as e:
    ROWS, PARSE_ERROR = [], str(e)


def test_the_tables_parse_and_the_ids_are_unique():
    assert PARSE_ERROR is None, PARSE_ERROR
    assert len(ROWS) >= 20, f"docs/plugins.md has only {len(ROWS)} behaviour rows: a table was not found"
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), f"docs/plugins.md: repeated ids {sorted({i for i in ids if ids.count(i) > 1})}"
    # one table per plugin, each row under the right one
    for prefix, plugin in {"C": "pulumi-command", "T": "pulumi-tls", "L": "language host", "K": "pulumi-kubernetes"}.items():
        assert any(r.id.startswith(prefix) for r in ROWS), f"docs/plugins.md: no {prefix} row ({plugin})"


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_each_row_names_its_upstream_and_real_tests(row: Row):
    found = problems(row, ROOT, DOC_TEXT)
    assert not found, "\n".join(found)


def test_the_unproven_section_exists_and_says_what_would_prove_it():
    section = _unproven_section(DOC_TEXT)
    assert section.strip(), f"docs/plugins.md has no section {UNPROVEN_HEADING[3:]!r}"
    assert "released" in section and "What would prove" in section, section[:500]


def test_the_readme_and_the_adapters_readme_point_here():
    for readme in ("README.md", "toolchain/adapters/README.md"):
        text = (ROOT / readme).read_text()
        assert re.search(r"\]\((?:\.\./)*(?:docs/)?plugins\.md\)", text), f"{readme} does not link docs/plugins.md"


# --- the checker itself: it finds each kind of mistake -----------------------------------------------------

HEADER = "| id | behaviour | upstream | relied on in | pinned by |\n|---|---|---|---|---|\n"


def _one(line: str, extra: str = "") -> tuple[Row, str]:
    text = HEADER + line + "\n" + extra
    (row,) = parse(text)
    return row, text


def test_the_checker_accepts_a_true_row_and_an_escaped_bar():
    row, text = _one("| C1 | `a\\|b` | pulumi-command `provider/pkg/x.go`; pulumi-tls issue #39 | `components/apiserver.py` "
                     "| `tests/unit/test_docs_plugins.py::test_the_checker_accepts_a_true_row_and_an_escaped_bar`<br>"
                     "`toolchain/adapters/internal/serve/serve_test.go::TestVersionFlagPrintsTheStampAndExits` |")
    assert row.behaviour == "`a|b`"
    assert problems(row, ROOT, text) == []


@pytest.mark.parametrize(("line", "expected"), [
    ("| C1 | b | | `components/apiserver.py` | `tests/unit/test_docs.py::test_every_config_key_is_documented` |",
     "no upstream source"),
    ("| C1 | b | somewhere `a/b.go` | `components/apiserver.py` | `tests/unit/test_docs.py::test_every_config_key_is_documented` |",
     "does not start with a known repository"),
    ("| C1 | b | pulumi-command connection.go | `components/apiserver.py` | `tests/unit/test_docs.py::test_every_config_key_is_documented` |",
     "names no `path/in/the/repository`"),
    ("| C1 | b | pulumi `a/b.go` | `components/nothing.py` | `tests/unit/test_docs.py::test_every_config_key_is_documented` |",
     "components/nothing.py, which does not exist"),
    ("| C1 | b | pulumi `a/b.go` | `components/apiserver.py` | `tests/unit/test_nothing.py::test_x` |",
     "tests/unit/test_nothing.py does not exist"),
    ("| C1 | b | pulumi `a/b.go` | `components/apiserver.py` | `tests/unit/test_docs.py::test_not_there` |",
     "defines no test test_not_there"),
    ("| C1 | b | pulumi `a/b.go` | `components/apiserver.py` | `tests/unit/test_docs.py::ROOT` |",
     "defines no test ROOT"),
    ("| C1 | b | pulumi `a/b.go` | `components/apiserver.py` | `toolchain/adapters/internal/serve/serve.go::TestMain` |",
     "defines no test TestMain"),
    ("| C1 | b | pulumi `a/b.go` | `components/apiserver.py` | (pinned at merge) |", "still says (pinned at merge)"),
    ("| C1 | b | pulumi `a/b.go` | `components/apiserver.py` | (not pinned: see below) |", "does not name C1"),
    ("| C1 | b | pulumi `a/b.go` | `components/apiserver.py` | test_x |", "unreadable `pinned by` entry"),
    ("| C1 | b | pulumi `a/b.go` | `components/apiserver.py` | |", "`pinned by` is empty"),
])
def test_the_checker_finds_each_kind_of_mistake(line: str, expected: str):
    row, text = _one(line)
    found = problems(row, ROOT, text)
    assert any(expected in p for p in found), found


def test_a_not_pinned_row_named_in_the_unproven_section_passes():
    row, text = _one("| T1 | b | terraform-provider-tls `internal/provider/common_key.go` | `components/pki.py` "
                     "| (not pinned: see below) |", f"\n{UNPROVEN_HEADING}\n\n- T1: the PEM encodings.\n")
    assert problems(row, ROOT, text) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("| id | what | upstream | relied on in | pinned by |\n|---|---|---|---|---|\n", "columns must be"),
    (HEADER.splitlines()[0] + "\n| C1 | b | c | d | e |\n", "followed by a `|---|` line"),
    (HEADER + "| C1 | a | b | c |\n", "4 cells, expected 5"),
    (HEADER + "| C1 | a|b | c | d | e |\n", "6 cells, expected 5"),
])
def test_a_malformed_table_is_named_with_its_line(text: str, expected: str):
    with pytest.raises(TableError, match=re.escape(expected)):
        parse(text)
