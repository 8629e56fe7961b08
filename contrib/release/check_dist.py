"""Check the sdist and wheel in dist/ before they are published; `nox -s build` runs it.

    python contrib/release/check_dist.py dist/labctl-X.tar.gz dist/labctl-X-py3-none-any.whl
    python contrib/release/check_dist.py --tag vX.Y.Z SDIST WHEEL   # a release: tag = version

Checks: both carry the same version; the wheel holds every file of the data folders
(kickstart, schema, units, modules, man when it exists) byte for byte under lab/_data/, the
generated lab/_version.py and the four console scripts; the sdist holds every file git tracks
under the folders the wheel is built from, CHANGELOG.md and PKG-INFO. With --tag the version
must be the tag's, and CHANGELOG.md must have its section (contrib/release/changelog.py).
Prints the version on the last line.
"""

from __future__ import annotations

import argparse
import email.parser
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from changelog import ChangelogError, release_notes, version_of_tag  # noqa: E402

DATA_DIRS = ("kickstart", "schema", "units", "man", "modules")
SCRIPTS = ("labctl", "labd", "lab-agent", "lab-bastion")
SDIST_DIRS = ("src", "kickstart", "schema", "units", "modules", "contrib", "docs")
SDIST_FILES = ("pyproject.toml", "README.md", "CHANGELOG.md", "noxfile.py")


class DistError(Exception):
    """An artifact misses something or disagrees with the checkout."""


def tracked(folder: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--", folder],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]


def metadata_version(text: str) -> str:
    return str(email.parser.Parser().parsestr(text)["Version"])


def check_wheel(wheel: Path) -> tuple[str, list[str]]:
    """The wheel's version and its data files."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        entry_points = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        if metadata is None or entry_points is None:
            raise DistError(f"{wheel.name}: no METADATA or entry_points.txt")
        version = metadata_version(zf.read(metadata).decode())
        scripts = zf.read(entry_points).decode()
        for script in SCRIPTS:
            if f"{script} = " not in scripts:
                raise DistError(f"{wheel.name}: no console script {script}")
        if "lab/_version.py" not in names:
            raise DistError(f"{wheel.name}: no lab/_version.py (the hatch-vcs build hook)")
        if f'__version__ = "{version}"' not in zf.read("lab/_version.py").decode():
            raise DistError(f"{wheel.name}: lab/_version.py does not say {version}")
        data: list[str] = []
        for folder in DATA_DIRS:
            if not (ROOT / folder).is_dir():
                continue
            for name in tracked(folder):
                inside = f"lab/_data/{name}"
                if inside not in names:
                    raise DistError(f"{wheel.name}: {name} is missing (expected {inside})")
                if zf.read(inside) != (ROOT / name).read_bytes():
                    raise DistError(f"{wheel.name}: {inside} differs from {name}")
                data.append(inside)
        stray = {n for n in names if n.startswith("lab/_data/")} - set(data)
        if stray:
            raise DistError(f"{wheel.name}: data files git does not track: {sorted(stray)}")
    return version, data


def check_sdist(sdist: Path) -> str:
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
        top = tf.getmembers()[0].name.split("/", 1)[0]
        pkg_info = tf.extractfile(f"{top}/PKG-INFO")
        if pkg_info is None:
            raise DistError(f"{sdist.name}: no PKG-INFO")
        version = metadata_version(pkg_info.read().decode())
    wanted = [*SDIST_FILES, *(n for folder in SDIST_DIRS for n in tracked(folder))]
    missing = [name for name in wanted if name not in members]
    if missing:
        raise DistError(f"{sdist.name}: missing {', '.join(missing[:10])}")
    return version


def check(sdist: Path, wheel: Path, tag: str | None) -> str:
    wheel_version, data = check_wheel(wheel)
    sdist_version = check_sdist(sdist)
    if wheel_version != sdist_version:
        raise DistError(f"wheel says {wheel_version}, sdist says {sdist_version}")
    if tag is not None:
        wanted = version_of_tag(tag)
        if wheel_version != wanted:
            raise DistError(f"tag {tag} wants version {wanted}, the build made {wheel_version}")
        release_notes((ROOT / "CHANGELOG.md").read_text(), wanted)
    for name in data:
        print(f"  data: {name}")
    return wheel_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", help="the release tag (vX.Y.Z) the artifacts must match")
    parser.add_argument("sdist", type=Path)
    parser.add_argument("wheel", type=Path)
    args = parser.parse_args(argv)
    try:
        version = check(args.sdist, args.wheel, args.tag)
    except (DistError, ChangelogError) as exc:
        print(f"check_dist: {exc}", file=sys.stderr)
        return 1
    print(f"{args.sdist.name} and {args.wheel.name} are complete")
    print(version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
