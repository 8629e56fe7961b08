"""Write labctl's man pages from the same help text as ``--help``: ``nox -s docs`` runs it.

    python contrib/man/mkman.py man        # man/man1/labctl.1, man/man8/labd.8, ...
    python contrib/man/mkman.py --check man  # exit 1 when a page is not what the code says

The pages are tracked in git (so the wheel and the sdist carry them without a build step);
a test runs ``--check``. Each page: NAME, SYNOPSIS, DESCRIPTION, one subsection per command
with its description and options, and ENVIRONMENT/FILES/EXIT STATUS where they apply.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cyclopts import App

PAGES = (
    ("labctl", 1, "lab.cli.main"),
    ("labd", 8, "lab.labd.main"),
    ("lab-agent", 8, "lab.agent.main"),
    ("lab-bastion", 8, "lab.bastion.main"),
)

EXTRA: dict[str, list[tuple[str, str]]] = {
    "labctl": [
        (
            "EXIT STATUS",
            "0 success, 1 error, 2 bad usage or invalid input or config, 3 permission denied "
            "or not authenticated, 4 not found, 5 labd or a dependency unavailable, 141 stdout "
            "closed. labctl exec exits with the remote command's code (127 not found, 126 not "
            "executable, 128+N killed by signal N).",
        ),
        (
            "ENVIRONMENT",
            "LABCTL_HOME (default ~/.labctl), LABCTL_CONFIG, and LABCTL_SERVER, LABCTL_OUTPUT, "
            "LABCTL_TIMEOUT, LABCTL_BASTION, LABCTL_CA_FINGERPRINT, LABCTL_CONTEXT, which win "
            "over the config file.",
        ),
        (
            "FILES",
            "~/.labctl/config.yaml (settings); ~/.labctl/contexts/NAME/ (key.pem, cert.pem, "
            "ca.pem and context.yaml of one labd); ~/.labctl/{key,cert,ca}.pem before contexts "
            "are used.",
        ),
    ],
    "labd": [
        (
            "EXIT STATUS",
            "0 stopped, 1 start-up failure, 2 bad command line, 3 port in use, 4 data dir "
            "unusable, 5 database unreachable, 6 missing optional dependency.",
        ),
        ("ENVIRONMENT", "LABD_CONFIG and LABD_<SETTING> for every setting of labd.yaml."),
    ],
}


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def _description(help_text: str | None) -> str:
    """The help text without its numpydoc Parameters section, as paragraphs."""
    text = inspect.cleandoc(help_text or "")
    text = re.split(r"\n\s*Parameters\n\s*-{3,}\n", text)[0].strip()
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n.PP\n".join(_escape(p) for p in paragraphs)


def _commands(app: App, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], App]]:
    for name, sub in sorted(app.resolved_commands().items()):
        if name.startswith("-") or sub is app:
            continue
        path = (*prefix, name)
        if sub.default_command is not None:
            yield path, sub
        yield from _commands(sub, path)


def _options(app: App) -> list[str]:
    out = []
    for argument in app.assemble_argument_collection(parse_docstring=True):
        if not argument.show:
            continue
        names = ", ".join(argument.names)
        out += [
            ".TP",
            f".B {_escape(names)}",
            _escape(" ".join((argument.parameter.help or "").split())),
        ]
    return out


def render(program: str, section: int, app: App) -> str:
    summary = _description(app.help).split("\n.PP\n")[0]
    lines = [
        f'.TH {program.upper()} {section} "" "labctl" "labctl manual"',
        ".SH NAME",
        f"{_escape(program)} \\- {summary[:1].lower() + summary[1:]}",
        ".SH SYNOPSIS",
        f".B {_escape(program)}",
        "[\\fICOMMAND\\fR] [\\fIOPTIONS\\fR]" if list(_commands(app)) else "[\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _description(app.help),
    ]
    if app.default_command is not None:
        lines += _options(app)
    commands = list(_commands(app))
    if commands:
        lines.append(".SH COMMANDS")
        for path, sub in commands:
            words = " ".join((program, *path))
            seen_aliases = sub.name if isinstance(sub.name, tuple) else (sub.name,)
            title = words if len(seen_aliases) < 2 else f"{words} ({', '.join(seen_aliases[1:])})"
            lines += [f'.SS "{_escape(title)}"', _description(sub.help), *_options(sub)]
    for heading, text in EXTRA.get(program, []):
        lines += [f".SH {heading}", _escape(text)]
    others = [f"{p}({s})" for p, s, _ in PAGES if p != program]
    lines += [".SH SEE ALSO", _escape(", ".join(others))]
    return "\n".join(line for line in lines if line) + "\n"


def _app(module: str) -> Any:
    import importlib

    return importlib.import_module(module).app


def pages() -> dict[str, str]:
    """Relative path (man1/labctl.1, ...) -> page text."""
    return {
        f"man{section}/{program}.{section}": render(program, section, _app(module))
        for program, section, module in PAGES
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the man/ folder")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for relative, text in pages().items():
        path = args.out / relative
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("out of date (run nox -s docs): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
