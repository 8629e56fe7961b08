"""The release notes of one version from CHANGELOG.md; a release without them is refused.

    python contrib/release/changelog.py v1.2.3                 # print the section of 1.2.3
    python contrib/release/changelog.py v1.2.3 --out notes.md  # write it for the release page

A release section is headed ``## X.Y.Z - YYYY-MM-DD`` and holds at least one line of text
before the next ``## `` heading. Exits 1 with one line on stderr when the tag is not a
release tag (vX.Y.Z, optionally aN, bN or rcN) or the section is missing or empty.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

CHANGELOG = Path(__file__).resolve().parents[2] / "CHANGELOG.md"
TAG = re.compile(r"v(\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)")


class ChangelogError(Exception):
    """No usable release notes for the version."""


def version_of_tag(tag: str) -> str:
    """``v1.2.3`` -> ``1.2.3``; also accepts ``refs/tags/v1.2.3``."""
    name = tag.removeprefix("refs/tags/")
    match = TAG.fullmatch(name)
    if match is None:
        raise ChangelogError(f"{name!r} is not a release tag (vX.Y.Z, vX.Y.ZrcN, ...)")
    return match.group(1)


def release_notes(text: str, version: str) -> str:
    """The body of ``## <version> - <date>`` in ``text``, stripped; ChangelogError if none."""
    heading = re.compile(rf"## \[?{re.escape(version)}\]? - \d{{4}}-\d{{2}}-\d{{2}}")
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if heading.fullmatch(line.strip())]
    if not starts:
        raise ChangelogError(
            f"CHANGELOG.md has no section for {version}: add a heading "
            f"'## {version} - YYYY-MM-DD' with the release's changes"
        )
    if len(starts) > 1:
        raise ChangelogError(f"CHANGELOG.md has {len(starts)} sections for {version}")
    body: list[str] = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("## "):
            break
        body.append(line)
    notes = "\n".join(body).strip()
    if not notes:
        raise ChangelogError(f"CHANGELOG.md: the section of {version} is empty")
    return notes + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", help="the release tag, vX.Y.Z")
    parser.add_argument("--out", type=Path, help="write the notes here instead of stdout")
    parser.add_argument("--changelog", type=Path, default=CHANGELOG)
    args = parser.parse_args(argv)
    try:
        notes = release_notes(args.changelog.read_text(), version_of_tag(args.tag))
    except ChangelogError as exc:
        print(f"changelog: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(notes)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
