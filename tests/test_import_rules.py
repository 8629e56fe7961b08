"""DESIGN §2's import rules, checked on the source (a small AST walk over src/lab).

An import counts wherever it is written: at module level, inside a function (where a lazy
import used to hide a circle) or under ``TYPE_CHECKING``. A package is the first name below
``lab`` (``lab.labd.hub`` belongs to ``labd``; ``lab.errors`` is a package of one module).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import lab

SRC = Path(lab.__file__).parent

DAEMONS = ("labd", "agent", "bastion")
# errors, model and proto import nothing else from lab but each other, in that order.
FOUNDATION = {"errors": set(), "model": {"errors"}, "proto": {"errors", "model"}}
# The layers every program shares: they never reach up into a program.
SHARED = (
    "errors",
    "model",
    "proto",
    "pki",
    "power",
    "runtime",
    "store",
    "kube",
    "client",
    "modules",
    "apply",
)
# Third-party modules only one package may import.
OWNED = {
    "cryptography": "pki",  # stricter than DESIGN's cryptography.hazmat: x509 too
    "sqlite3": "store",
    "psycopg": "store",
    "psycopg_pool": "store",
}
# Packages with no function-level import: one usually hides a circle (move the shared piece
# down instead). The exception is an optional dependency's edge, marked on its line.
NO_LAZY_IMPORTS = ("labd",)
OPTIONAL_EDGE = "# optional dependency"
# cyclopts' lazy commands ("lab.cli.init_cmd:init_app") import their module when called.
_LAZY_COMMAND = re.compile(r"lab(?:\.[a-z_][a-z0-9_]*)+:[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class Import:
    module: str
    """The importing module, e.g. ``lab.cli.init_labd``."""
    target: str
    """What it imports, e.g. ``lab.labd.config`` or ``sqlite3``."""
    line: int

    @property
    def source_package(self) -> str:
        return package_of(self.module)

    @property
    def target_package(self) -> str:
        return package_of(self.target)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def package_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if parts[0] == "lab" and len(parts) > 1 else parts[0]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = SRC) -> Iterator[Import]:
    """Every import in ``path``, wherever it is written, with relative imports resolved."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base == "lab":  # from lab import pki: the names are the packages
                for alias in node.names:
                    yield Import(module, f"lab.{alias.name}", node.lineno)
            else:
                yield Import(module, base, node.lineno)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _LAZY_COMMAND.fullmatch(node.value)
        ):
            yield Import(module, node.value.partition(":")[0], node.lineno)


def all_imports(root: Path = SRC) -> list[Import]:
    return [imp for path in sorted(root.rglob("*.py")) for imp in imports_of(path, root)]


def lab_edges(imports: list[Import]) -> dict[tuple[str, str], list[Import]]:
    """Package → package imports inside lab, each with the imports that make it."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in imports:
        if imp.target.split(".")[0] != "lab" or imp.target == "lab":
            continue
        pair = (imp.source_package, imp.target_package)
        if pair[0] != pair[1] and not pair[1].startswith("_"):  # lab.__version__
            edges.setdefault(pair, []).append(imp)
    return edges


def cycles(edges: dict[tuple[str, str], list[Import]]) -> list[list[str]]:
    """The package circles: every strongly connected group of more than one package."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {node: reach(node) for node in graph}
    groups = {
        frozenset(n for n in graph if n == node or (n in reachable[node] and node in reachable[n]))
        for node in graph
    }
    return sorted(sorted(group) for group in groups if len(group) > 1)


def _explain(edges: dict[tuple[str, str], list[Import]], pairs: list[tuple[str, str]]) -> str:
    return "\n".join(str(imp) for pair in pairs for imp in edges.get(pair, []))


DOCS = Path(__file__).parents[1] / "docs" / "development.md"
_ROW = re.compile(r"^\| `([a-z]+)` \| .* \| ([^|]+) \|$", re.M)


def package_map(text: str) -> dict[str, set[str]]:
    """docs/development.md's package map: each package and what it may import from lab."""
    rows = {name: allowed.strip() for name, allowed in _ROW.findall(text)}
    everything = set(rows)
    table: dict[str, set[str]] = {}
    for name, allowed in rows.items():
        if allowed == "nothing":
            table[name] = set()
        elif allowed.startswith("everything but "):
            table[name] = everything - {name} - set(re.findall(r"`([a-z]+)`", allowed))
        else:
            table[name] = set(re.findall(r"`([a-z]+)`", allowed))
    return table


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports()


def test_no_circle_between_packages(imports: list[Import]) -> None:
    edges = lab_edges(imports)
    found = cycles(edges)
    pairs = [(a, b) for group in found for a in group for b in group if (a, b) in edges]
    assert found == [], _explain(edges, pairs)


def test_every_import_is_in_the_package_map(imports: list[Import]) -> None:
    table = package_map(DOCS.read_text(encoding="utf-8"))
    packages = {
        path.stem
        for path in SRC.iterdir()
        if not path.name.startswith("_")
        and ((path / "__init__.py").is_file() or path.suffix == ".py")
    }
    assert packages - set(table) == set(), "packages missing from docs/development.md's map"
    edges = lab_edges(imports)
    beyond = [(a, b) for a, b in edges if b not in table.get(a, set())]
    assert _explain(edges, beyond) == ""


@pytest.mark.parametrize("daemon", DAEMONS)
def test_daemons_import_neither_cli_nor_local(imports: list[Import], daemon: str) -> None:
    edges = lab_edges(imports)
    assert _explain(edges, [(daemon, "cli"), (daemon, "local")]) == ""


def test_cli_imports_no_daemon(imports: list[Import]) -> None:
    edges = lab_edges(imports)
    assert _explain(edges, [("cli", daemon) for daemon in DAEMONS]) == ""


@pytest.mark.parametrize("package", SHARED)
def test_shared_layers_import_no_program(imports: list[Import], package: str) -> None:
    edges = lab_edges(imports)
    programs = (*DAEMONS, "cli", "local")
    assert _explain(edges, [(package, program) for program in programs]) == ""


@pytest.mark.parametrize("package", FOUNDATION)
def test_foundation_imports_only_what_is_below(imports: list[Import], package: str) -> None:
    edges = lab_edges(imports)
    beyond = [pair for pair in edges if pair[0] == package and pair[1] not in FOUNDATION[package]]
    assert _explain(edges, beyond) == ""


@pytest.mark.parametrize("library", OWNED)
def test_owned_libraries_stay_in_their_package(imports: list[Import], library: str) -> None:
    offenders = [
        str(imp)
        for imp in imports
        if imp.target.split(".")[0] == library and imp.source_package != OWNED[library]
    ]
    assert offenders == []


def function_level_imports(path: Path) -> Iterator[str]:
    """``path:line`` of every import written inside a function, except an optional
    dependency's edge (its line carries ``# optional dependency`` and says which)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    seen: set[int] = set()  # ast.walk is breadth first: the outermost function names it
    for fn in ast.walk(ast.parse(text, filename=str(path))):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno not in seen:
                seen.add(node.lineno)
                if OPTIONAL_EDGE not in lines[node.lineno - 1]:
                    yield f"{path}:{node.lineno} (in {fn.name})"


@pytest.mark.parametrize("package", NO_LAZY_IMPORTS)
def test_no_function_level_imports(package: str) -> None:
    found = [
        hit
        for path in sorted((SRC / package).rglob("*.py"))
        for hit in function_level_imports(path)
    ]
    assert found == []


# --- the fast `labctl exec` (lab.cli.exec_fast): what it imports costs every run of it

# Each of these costs more to import than the whole exec round trip takes (DESIGN §10).
NOT_ON_THE_EXEC_PATH = (
    "trio",
    "trio_websocket",
    "wsproto",
    "h11",
    "attr",
    "attrs",
    "cattrs",
    "cyclopts",
    "httpx",
    "yaml",
    "cryptography",
    "lab.proto",
    "lab.model",
    "lab.cli.commands",
)
_EXEC_PATH = """
import os, sys
from pathlib import Path
from lab.cli.main import take_context
from lab.cli.fastpath import plain_exec
from lab.cli import exec_fast, exec_io
from lab.client.quicksettings import quick_target
from lab.runtime.exits import handle
home = Path(sys.argv[1])
(home / "config.yaml").write_text("server: https://lab.example:3100\\ntimeout: 5\\n")
os.environ["LABCTL_HOME"] = str(home)
assert plain_exec(take_context(["exec", "server/a", "--", "true"])) is not None
assert quick_target() == ("https://lab.example:3100", home)
exec_fast.quick_decode(b'{"type":"exec-exit","v":1,"stream_id":1,"code":0}')
exec_fast.exec_request("a", ["true"], stdin=False, tty=False, rows=24, cols=80)
print("\\n".join(sorted(sys.modules)))
"""


def test_the_fast_exec_path_imports_none_of_the_heavy_stack(tmp_path: Path) -> None:
    """Importing and running the pieces of the plain `labctl exec` in a fresh interpreter
    loads none of :data:`NOT_ON_THE_EXEC_PATH` (tests/exec/test_exec_fast_path.py checks a
    real run against labd the same way)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _EXEC_PATH, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert "lab.cli.exec_fast" in out
    heavy = [m for m in out if any(m == h or m.startswith(h + ".") for h in NOT_ON_THE_EXEC_PATH)]
    assert heavy == []


# --- the scanner itself: it must see the imports that do exist, however they are written


def test_function_level_imports_are_found_unless_marked_optional(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        "import os\n"
        "def f():\n    from lab.labd.app import create_app\n"
        "async def g():\n    def inner():\n        import json\n"
        "def h():\n    import psycopg  # optional dependency: labctl[postgres]\n"
    )
    assert [hit.rpartition(":")[2] for hit in function_level_imports(path)] == [
        "3 (in f)",
        "6 (in g)",
    ]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "lab"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_scanner_sees_every_spelling_of_an_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "agent/__init__.py": "",
            "agent/main.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from lab.store import Store\n"
                "def f():\n    from lab.cli.client import LabClient\n"
                "    import lab.local.daemonize\n"
                "from lab import pki\n"
                "from . import sibling\n"
                "from ..proto import messages\n"
                "import sqlite3\n"
            ),
            "cli/main.py": 'app.command("lab.labd.main:serve", name="x")\n',
        },
    )
    found = {(imp.module, imp.target) for imp in all_imports(root)}
    assert found == {
        ("lab.agent.main", "typing"),
        ("lab.agent.main", "lab.store"),
        ("lab.agent.main", "lab.cli.client"),
        ("lab.agent.main", "lab.local.daemonize"),
        ("lab.agent.main", "lab.pki"),
        ("lab.agent.main", "lab.agent"),
        ("lab.agent.main", "lab.proto"),
        ("lab.agent.main", "sqlite3"),
        ("lab.cli.main", "lab.labd.main"),
    }


def test_cycles_finds_pairs_and_longer_circles_only() -> None:
    def edge(a: str, b: str) -> tuple[tuple[str, str], list[Import]]:
        return (a, b), [Import(f"lab.{a}", f"lab.{b}", 1)]

    edges = dict(
        [
            edge("agent", "cli"),
            edge("cli", "agent"),
            edge("a", "b"),
            edge("b", "c"),
            edge("c", "a"),
            edge("cli", "errors"),
            edge("agent", "errors"),
        ]
    )
    assert cycles(edges) == [["a", "b", "c"], ["agent", "cli"]]
    assert cycles({k: v for k, v in edges.items() if k != ("c", "a")}) == [["agent", "cli"]]


def test_package_map_reads_the_table() -> None:
    text = (
        "| package | owns | may import from `lab` |\n|---|---|---|\n"
        "| `errors` | the `LabError` tree | nothing |\n"
        "| `model` | records | `errors` |\n"
        "| `local` | this box | everything but `cli` |\n"
        "| `cli` | labctl | `errors`, `local` |\n"
    )
    assert package_map(text) == {
        "errors": set(),
        "model": {"errors"},
        "local": {"errors", "model"},
        "cli": {"errors", "local"},
    }
