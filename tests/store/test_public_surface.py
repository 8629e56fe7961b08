"""Outside lab.store, code imports the package (``from lab.store import ...``), never one of
its modules: the repositories' Protocols and the few names re-exported beside them are the
store's whole surface, so its modules (backends, the audit chain, the seed) can move."""

from __future__ import annotations

import ast
from pathlib import Path

import lab

SRC = Path(lab.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import, wherever it is written in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _reaching_in(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "store":
            continue
        found += [
            f"{rel}:{line} imports {target}"
            for line, target in _imports(path)
            if target.startswith("lab.store.")
        ]
    return found


def test_nothing_outside_the_store_imports_its_modules() -> None:
    assert _reaching_in(SRC) == []


def test_a_route_reaching_into_the_store_is_found(tmp_path: Path) -> None:
    api = tmp_path / "lab" / "labd" / "api"
    api.mkdir(parents=True)
    (api / "roles.py").write_text("from lab.store.seed import SELF_SERVICE\nimport lab.store\n")
    (tmp_path / "lab" / "store").mkdir()
    (tmp_path / "lab" / "store" / "open.py").write_text("from lab.store.sqlite import x\n")
    assert _reaching_in(tmp_path / "lab") == ["labd/api/roles.py:1 imports lab.store.seed"]
