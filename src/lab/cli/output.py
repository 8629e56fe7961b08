"""Printing results: table, wide, json or yaml; errors on stderr in one line with a hint."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "wide", "json", "yaml")


def emit(data: Any, fmt: str, *, columns: Sequence[str] = (), wide: Sequence[str] = ()) -> None:
    """Print ``data`` (a dict or a list of dicts) in ``fmt``."""
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str, sort_keys=True))
        return
    if fmt == "yaml":
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=True), end="")
        return
    rows = data if isinstance(data, list) else [data]
    cols = list(columns) + (list(wide) if fmt == "wide" else [])
    if not cols and rows:
        cols = list(rows[0].keys())
    table = [[c.upper() for c in cols]]
    table += [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    """Print one error line (and a hint) to stderr and exit with ``code``."""
    line = f"error: {message}"
    if hint:
        line += f" (hint: {hint})"
    print(line, file=sys.stderr)
    raise SystemExit(code)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        fail(f"unknown output format {fmt!r}", "use one of: " + ", ".join(FORMATS), code=2)
    return fmt


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (blocking); BrokenPipeError once its reader is gone."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def write_out(fd: int, data: bytes) -> None:
    """:func:`write_all` in a thread: a stdout nobody reads blocks neither the connection
    (labd's pings are answered, output credit is not granted) nor Ctrl-C."""
    import trio

    await trio.to_thread.run_sync(write_all, fd, data, abandon_on_cancel=True)
