"""docs/threat-model.md stays true to the code: the secrets, resources, keys and policies it names exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from components.errors import SECRET_KEYS
from tests.support.program import run

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "threat-model.md").read_text()
sys.path.insert(0, str(ROOT / "policy"))

import aggregation_policies as ap  # noqa: E402


def test_it_answers_the_three_questions():
    for heading in ("## Who can do what", "## What each secret protects", "## What the program defends against",
                    "## What it does not defend against"):
        assert heading in DOC
    for who in ("config writers", "CI", "pull-request authors", "master admins"):
        assert f"**{who}**" in DOC, who


def test_every_secret_config_key_is_covered():
    camel = {k for k in SECRET_KEYS if "_" not in k}
    for key in camel:
        assert re.search(rf"`[a-zA-Z.]*\b{key}`", DOC), key
    assert "PULUMI_CONFIG_PASSPHRASE" in DOC


def test_the_private_keys_it_names_are_the_programs(stack_config):
    named = set(re.findall(r"`([a-z-]+-key)`", DOC))
    registered = {r.name for r in run(stack_config()).of_type("tls:index/privateKey:PrivateKey")}
    assert named == registered, (named, registered)


def test_the_policies_and_settings_it_names_exist():
    policies = [p for p in re.findall(r"`([a-z-]+)`", DOC) if p.startswith("no-")]
    assert policies and all(p in ap.CONFIG_KEYS for p in policies), policies
    for name in ("VALUE_PATTERN", "insecureSkipHostKeyCheck", "deniedFlags", "keyOwner", "metrics-server-serving-cert"):
        assert name in DOC
    assert (ROOT / "components" / "config.py").read_text().count("VALUE_PATTERN =") == 1
