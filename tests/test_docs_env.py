"""Every environment variable and config key a user can set is documented."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from lab.bastion.config import BastionConfig
from lab.client.settings import CliSettings
from lab.labd.config import LabdConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
CONFIGS = [(LabdConfig, "LABD_"), (CliSettings, "LABCTL_"), (BastionConfig, "LAB_BASTION_")]


def _variables_in_source() -> set[str]:
    pattern = re.compile(r"\b(LAB(?:D|CTL|_AGENT|_BASTION)_[A-Z][A-Z0-9_]*)\b")
    found: set[str] = set()
    for path in (ROOT / "src" / "lab").rglob("*.py"):
        found.update(pattern.findall(path.read_text()))
    return {v for v in found if not v.endswith("_")}


@pytest.mark.parametrize("variable", sorted(_variables_in_source()))
def test_every_variable_named_in_the_code_is_documented(variable: str) -> None:
    assert variable in DOCS, f"{variable} is read by labctl but not documented"


@pytest.mark.parametrize(
    ("key", "variable"),
    [(f.name, prefix + f.name.upper()) for cls, prefix in CONFIGS for f in attrs.fields(cls)],
)
def test_every_config_key_is_documented(key: str, variable: str) -> None:
    assert f"`{key}`" in DOCS, f"config key {key} is not documented"
    assert variable in DOCS, f"{variable} is not documented"
