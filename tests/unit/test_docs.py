"""The README's config reference names every key the program reads (and no key it does not)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args, get_origin

from pydantic import BaseModel

from components.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


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
        path = prefix + model.model_config["alias_generator"].validation_alias(name)
        models = _models(field.annotation)
        if not models:
            out.add(path)
        for sub, in_list in models:
            out |= keys(sub, f"{path}[]." if in_list else f"{path}.")
    return out


def documented() -> set[str]:
    table = README.split("## Stack config reference", 1)[1].split("\n## ", 1)[0]
    found = set()
    for cell in re.findall(r"^\| \*{0,2}`([^`]+)`", table, flags=re.M):
        found.add(cell)
    # "a / b / c" rows document several keys that share a prefix
    for row in re.findall(r"^\| `([^`]+)` / (.+?) \|", table, flags=re.M):
        head, rest = row
        base = head.rsplit(".", 1)[0]
        for other in re.findall(r"`([^`]+)`", rest):
            found.add(f"{base}.{other}" if "." not in other else other)
    return found


def test_every_config_key_is_documented():
    missing = sorted(k for k in keys(Settings) if k not in documented() and not _covered_by_object_row(k))
    assert missing == [], f"README config reference lacks: {missing}"


def _covered_by_object_row(key: str) -> bool:
    """`pki.subject` / `ssh.bastion` rows list their members inline as {a, b, ...}."""
    parent, _, member = key.rpartition(".")
    row = re.search(rf"^\| `{re.escape(parent)}` \|.*$", README, flags=re.M)
    return bool(row and re.search(rf"\b{re.escape(member)}\b", row.group(0)))
