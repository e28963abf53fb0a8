"""docs/config.md, the config reference, names every key the program reads (and no key it does not); the
README links to it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import get_args, get_origin

import pytest
from pydantic import BaseModel

from components import contract
from components.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DOC = (ROOT / "docs" / "config.md").read_text()
# the keys table: from the title to the first section after it (the value grammar, extra flags)
TABLE = CONFIG_DOC.split("# Stack config reference\n", 1)[1].split("\n## ", 1)[0]


def _models(annotation) -> list[tuple[type[BaseModel], bool]]:
    """The pydantic models inside a field's type, each with whether it sits in a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, False)]
    in_list = get_origin(annotation) in (list, tuple)
    return [(m, in_list or nested) for arg in get_args(annotation) for m, nested in _models(arg)]


def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf key path of the config, as users write it (`masters[].hostKey`, `ssh.bastion.host`)."""
    out = set()
    for name, field in model.model_fields.items():
        # a key Kubernetes spells otherwise (`ephemeral-storage`) has its own alias
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        path = prefix + (alias or model.model_config["alias_generator"].validation_alias(name))
        models = _models(field.annotation)
        if not models:
            out.add(path)
        for sub, in_list in models:
            out |= keys(sub, f"{path}[]." if in_list else f"{path}.")
    return out


def documented() -> set[str]:
    found = set()
    for cell in re.findall(r"^\| \*{0,2}`([^`]+)`", TABLE, flags=re.M):
        found.add(cell)
    # "a / b / c" rows document several keys that share a prefix
    for row in re.findall(r"^\| `([^`]+)` / (.+?) \|", TABLE, flags=re.M):
        head, rest = row
        base = head.rsplit(".", 1)[0]
        for other in re.findall(r"`([^`]+)`", rest):
            found.add(f"{base}.{other}" if "." not in other else other)
    return found


def test_every_config_key_is_documented():
    missing = sorted(k for k in keys(Settings) if k not in documented() and not _covered_by_object_row(k))
    assert missing == [], f"docs/config.md lacks: {missing}"


def _covered_by_object_row(key: str) -> bool:
    """`pki.subject` / `ssh.bastion` rows list their members inline as {a, b, ...}; an object nested deeper
    (`metricsServer.resources.limits.cpu`, `metricsServer.tolerations[].effect`) is covered by the row of its
    nearest documented ancestor when that row names every part of the key below it."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        ancestor = ".".join(parts[:i]).removesuffix("[]")
        row = re.search(rf"^\| \*{{0,2}}`{re.escape(ancestor)}`\*{{0,2}} \|.*$", TABLE, flags=re.M)
        if row:
            return all(re.search(rf"(?<![\w-]){re.escape(p.removesuffix('[]'))}(?![\w-])", row.group(0))
                       for p in parts[i:])
    return False


def test_no_key_is_documented_that_the_program_does_not_read():
    known = keys(Settings)
    # object rows (`masters`, `pki.subject`) stand for their members; `kubernetes:*` is the provider's
    extra = sorted(d for d in documented() if d not in known and not d.startswith("kubernetes:")
                   and not any(k.startswith((f"{d}.", f"{d}[].")) for k in known))
    assert extra == [], f"docs/config.md documents keys the program does not read: {extra}"


def _bold_keys(text: str) -> set[str]:
    return set(re.findall(r"^\| \*\*`([^`]+)`\*\*", text, flags=re.M))


def test_the_contract_keys_are_the_bold_keys_of_the_config_reference():
    contracts = (ROOT / "docs" / "contracts.md").read_text()
    section = contracts.split("## Stack config\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))
    assert listed == _bold_keys(TABLE), (sorted(listed - _bold_keys(TABLE)), sorted(_bold_keys(TABLE) - listed))


def test_the_contracts_page_names_every_shared_name():
    contracts = (ROOT / "docs" / "contracts.md").read_text()
    names = [contract.NAMESPACE, contract.METRICS_API_SERVICE, *contract.PEM_FILES, *contract.MANAGED_FLAGS,
             *contract.OUTPUTS]
    assert [n for n in names if not re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w-])", contracts)] == []


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or not dest.is_relative_to(ROOT):
            broken.append(target)
        elif anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", dest.read_text(), flags=re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert broken == []


def test_the_readme_shows_the_two_commands_and_links_the_config_reference():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "](docs/config.md)" in readme and "](docs/contracts.md)" in readme


SKIP = ("venv", "__pycache__")
OUTSIDE = ("../" + "shared", "shared/" + "design.md", "shared/" + "reference/")  # split: this file is scanned too


def test_nothing_in_the_repository_points_outside_it():
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        # the repository's own dot dirs are scanned; git's, caches and local state are not
        dirnames[:] = [d for d in dirnames if d in (".ci", ".github") or not d.startswith(".") and d not in SKIP]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            found += [f"{path.relative_to(ROOT)}: {ref}" for ref in OUTSIDE if ref in text]
    assert found == []
