"""DESIGN §2: only lab.pki may import cryptography (hazmat and x509)."""

from __future__ import annotations

import ast
from pathlib import Path

import lab

SRC = Path(lab.__file__).parent


def _imports_cryptography(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == "cryptography" or n.startswith("cryptography.") for n in names):
            return True
    return False


def test_only_pki_imports_cryptography() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).parts[0] != "pki" and _imports_cryptography(path)
    ]
    assert offenders == []


def test_pki_does_import_cryptography() -> None:
    # Guards the scanner itself: it must see the imports that do exist.
    assert _imports_cryptography(SRC / "pki" / "ca.py")
