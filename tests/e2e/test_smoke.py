"""The smoke walk (tests/smoke/smoke.py, also `nox -s smoke`) in the default suite."""

from __future__ import annotations

from pathlib import Path

from tests.smoke.smoke import run_smoke


def test_a_fresh_install_works_end_to_end(tmp_path: Path) -> None:
    lines: list[str] = []
    total = run_smoke(tmp_path, say=lines.append)
    assert lines[-1].startswith("smoke passed"), "\n".join(lines)
    assert sum(line.startswith("ok ") for line in lines) == 15
    assert total < 120, f"the smoke walk took {total:.0f} s (meant to stay under ~60 s)"
