"""``nox -s zipapp``: labctl as one executable file built with shiv."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The same options as the zipapp session in noxfile.py.
ZIPAPP_ARGS = ("-c", "labctl", "-p", "/usr/bin/env python3", "--compressed", "--reproducible")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("shiv") is None, reason="shiv is not installed (pip install shiv)"
    ),
]


def test_zipapp_builds_and_runs(tmp_path: Path) -> None:
    target = tmp_path / "labctl.pyz"
    build = subprocess.run(
        [sys.executable, "-m", "shiv", *ZIPAPP_ARGS, "-o", str(target), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert target.stat().st_mode & 0o111

    # shiv unpacks into SHIV_ROOT on first run; keep that out of the user's home.
    env = {**os.environ, "SHIV_ROOT": str(tmp_path / "shiv"), "HOME": str(tmp_path)}
    # Run it the way users do, through its shebang, with the test's Python first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    helped = subprocess.run(
        [str(target), "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert helped.returncode == 0, helped.stderr
    assert "Usage: labctl" in helped.stdout
    version = subprocess.run(
        [str(target), "version"], capture_output=True, text=True, env=env, timeout=120
    )
    assert version.returncode == 0, version.stderr
    # The version the build gave the package (from the git tag), as pip recorded it.
    names = zipfile.ZipFile(target).namelist()
    (built,) = {m[1] for n in names if (m := re.match(r"site-packages/labctl-(.+)\.dist-info/", n))}
    assert version.stdout.strip() == f"labctl {built}"
