"""Man pages: written from the programs' help by `nox -s docs`, tracked, and up to date."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli.main import app
from tests.cli.commands import command_paths

ROOT = Path(__file__).resolve().parents[2]
MKMAN = ROOT / "contrib" / "man" / "mkman.py"


@pytest.mark.parametrize("path", sorted(command_paths(app)), ids=" ".join)
def test_the_tracked_page_has_every_command(path: tuple[str, ...]) -> None:
    # Byte equality is `mkman.py --check` (nox -s build regenerates the pages anyway); a
    # command missing from the page means nobody ran `nox -s docs` after adding it.
    page = (ROOT / "man" / "man1" / "labctl.1").read_text()
    words = " ".join(("labctl", *path)).replace("-", "\\-")
    assert f'.SS "{words}' in page, f"run nox -s docs: {words} is not in man/man1/labctl.1"


def test_pages_render_and_hold_every_command(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(MKMAN), str(tmp_path)], check=True, capture_output=True)
    labctl = (tmp_path / "man1" / "labctl.1").read_text()
    for words in ("labctl get servers", "labctl config use\\-context", "labctl completion"):
        assert f'.SS "{words}' in labctl
    assert ".SH EXIT STATUS" in labctl
    assert (tmp_path / "man8" / "labd.8").read_text().startswith(".TH LABD 8")
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    for page in sorted(tmp_path.glob("man*/*.[18]")):
        done = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (done.returncode, done.stderr) == (0, ""), page
