"""``lab-bastion wheelhouse build``: the wheels installed machines pip-install lab-agent from.

Installed machines have no internet (only the bastion), so ``%post`` runs
``pip install --no-index --find-links http://<bastion>/wheelhouse/ labctl``. This fills that
directory with the labctl wheel and every dependency, for the target's Python and platform.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lab.errors import ConfigError, Unavailable

DEFAULT_PYTHON = "3.11"
"""Fedora 41-43 ship Python 3.13, but the default follows labctl's floor; pass --python."""


def checkout_root() -> Path | None:
    """The source tree of an editable install (where ``pyproject.toml`` is), else None."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "lab").is_dir() else None


def pip_commands(
    dest: Path,
    *,
    python: str = DEFAULT_PYTHON,
    platforms: tuple[str, ...] = (),
    source: Path | None = None,
    requirement: str | None = None,
) -> list[list[str]]:
    """The pip invocations that fill ``dest`` (pure, so tests can check them)."""
    pip = [sys.executable, "-m", "pip"]
    cmds: list[list[str]] = []
    if source is not None:
        # A checkout is not on an index: build its wheel first, then resolve deps from it.
        cmds.append([*pip, "wheel", "--no-deps", "--wheel-dir", str(dest), str(source)])
        target = "labctl"
        find_links = ["--find-links", str(dest)]
    else:
        target = requirement or f"labctl=={_installed_version()}"
        find_links = []
    download = [*pip, "download", "--dest", str(dest), "--python-version", python]
    download += ["--only-binary=:all:"]
    for plat in platforms:
        download += ["--platform", plat]
    cmds.append([*download, *find_links, target])
    return cmds


def _installed_version() -> str:
    try:
        return version("labctl")
    except PackageNotFoundError as exc:
        raise ConfigError("labctl is not installed; give --source or --requirement") from exc


def build(
    dest: Path,
    *,
    python: str = DEFAULT_PYTHON,
    platforms: tuple[str, ...] = (),
    source: Path | None = None,
    requirement: str | None = None,
) -> list[Path]:
    """Run the pip commands; return the files now in ``dest``. Raises Unavailable on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    if source is None and requirement is None:
        source = checkout_root()
    for cmd in pip_commands(
        dest, python=python, platforms=platforms, source=source, requirement=requirement
    ):
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            raise Unavailable(f"pip failed ({done.returncode}): {' '.join(cmd[3:5])} ...")
    return sorted(p for p in dest.iterdir() if p.is_file())
