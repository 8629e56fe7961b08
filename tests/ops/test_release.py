"""contrib/release: release notes from CHANGELOG.md and the checks of the built wheel."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.procs import clean_env

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "contrib" / "release"


def load(name: str) -> ModuleType:
    sys.path.insert(0, str(RELEASE))
    try:
        spec = importlib.util.spec_from_file_location(f"release_{name}", RELEASE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(RELEASE))


changelog = load("changelog")
check_dist = load("check_dist")

TEXT = """# Changelog

## Unreleased

- something new

## 1.2.0 - 2026-11-30

- labd: one thing
- labctl: another

## 1.1.0 - 2026-10-01

- first
"""


def test_notes_are_the_section_of_the_version() -> None:
    assert changelog.release_notes(TEXT, "1.2.0") == "- labd: one thing\n- labctl: another\n"
    assert changelog.release_notes(TEXT, "1.1.0") == "- first\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TEXT, "no section for 1.3.0: add a heading '## 1.3.0 - YYYY-MM-DD'"),
        (TEXT.replace("## 1.2.0 - 2026-11-30", "## 1.3.0"), "no section for 1.3.0"),
        (TEXT + "\n## 1.3.0 - 2026-12-01\n\n", "the section of 1.3.0 is empty"),
        (TEXT + "## 1.3.0 - 2026-12-01\n- a\n## 1.3.0 - 2026-12-02\n- b\n", "2 sections"),
        # A version that only starts the same way is another version.
        (TEXT.replace("1.2.0", "1.3.0.1"), "no section for 1.3.0"),
    ],
)
def test_a_release_without_notes_is_refused(text: str, message: str) -> None:
    with pytest.raises(changelog.ChangelogError, match=message.replace("(", r"\(")):
        changelog.release_notes(text, "1.3.0")


def test_tags() -> None:
    assert changelog.version_of_tag("v1.2.3") == "1.2.3"
    assert changelog.version_of_tag("refs/tags/v1.2.3rc1") == "1.2.3rc1"
    for bad in ("1.2.3", "v1.2", "v1.2.3-rc1", "vnext", "v1.2.3.dev1"):
        with pytest.raises(changelog.ChangelogError, match="not a release tag"):
            changelog.version_of_tag(bad)


def test_cli_writes_the_notes_and_fails_in_one_line(tmp_path: Path) -> None:
    log = tmp_path / "CHANGELOG.md"
    log.write_text(TEXT)
    script = [sys.executable, str(RELEASE / "changelog.py"), "--changelog", str(log)]
    done = subprocess.run([*script, "v1.1.0", "--out", str(tmp_path / "out" / "notes.md")])
    assert done.returncode == 0
    assert (tmp_path / "out" / "notes.md").read_text() == "- first\n"
    failed = subprocess.run([*script, "v9.0.0"], capture_output=True, text=True)
    assert failed.returncode == 1
    assert failed.stderr.startswith("changelog: CHANGELOG.md has no section for 9.0.0")
    assert failed.stdout == ""


def test_the_changelog_describes_itself() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in text
    # Every release section has notes (a section the workflow would refuse fails here first).
    for line in text.splitlines():
        if line.startswith("## ") and line != "## Unreleased":
            changelog.release_notes(text, line.split()[1].strip("[]"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    (found,) = out.glob("labctl-*.whl")
    return found


def rewrite(wheel: Path, dest: Path, drop: str = "", change: str = "") -> Path:
    """A copy of ``wheel`` without the member ``drop`` and with ``change`` altered."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(dest, "w") as out:
        for item in src.infolist():
            if item.filename == drop:
                continue
            data = src.read(item)
            out.writestr(item, data + b"# changed\n" if item.filename == change else data)
    return dest


def test_wheel_check_lists_every_data_file(wheel: Path) -> None:
    version, data = check_dist.check_wheel(wheel)
    assert wheel.name.startswith(f"labctl-{version}-")
    tracked = [*check_dist.tracked("kickstart"), *check_dist.tracked("units")]
    tracked += check_dist.tracked("modules")
    assert tracked
    assert "modules/cockroachdb/module.yaml" in tracked
    assert {f"lab/_data/{name}" for name in tracked} <= set(data)
    assert "lab/_data/schema/openapi.yaml" in data
    assert "lab/_data/schema/module.schema.json" in data


@pytest.mark.parametrize(
    ("drop", "change", "message"),
    [
        ("lab/_data/units/labd.service", "", "units/labd.service is missing"),
        ("", "lab/_data/schema/openapi.yaml", "lab/_data/schema/openapi.yaml differs"),
        ("lab/_version.py", "", "no lab/_version.py"),
    ],
)
def test_wheel_check_refuses_an_incomplete_wheel(
    wheel: Path, tmp_path: Path, drop: str, change: str, message: str
) -> None:
    broken = rewrite(wheel, tmp_path / wheel.name, drop=drop, change=change)
    with pytest.raises(check_dist.DistError, match=message):
        check_dist.check_wheel(broken)
