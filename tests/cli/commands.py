"""Walk labctl's command tree (resolving lazy commands) for the docs and help tests."""

from __future__ import annotations

from collections.abc import Iterator

from cyclopts import App

_META = {"--help", "-h", "--version"}


def command_paths(app: App, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, sub in app.resolved_commands().items():
        if name in _META or name.startswith("-"):
            continue
        path = (*prefix, name)
        yield path
        yield from command_paths(sub, path)
