"""Printing results: table, wide, json, yaml, name or jsonpath=EXPR; errors on stderr as
one ``error:`` line and an optional ``hint:`` line. Shared by labctl and the daemons' own
commands (``lab-agent status``); labctl's ``-o`` option and its default from the settings
are in :mod:`lab.cli.output`."""

from __future__ import annotations

import json
import os
import select
import sys
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "wide", "json", "yaml", "name")
JSONPATH = "jsonpath="


def emit(
    data: Any,
    fmt: str,
    *,
    columns: Sequence[str] = (),
    wide: Sequence[str] = (),
    kind: str = "",
) -> None:
    """Print ``data`` (a dict or a list of dicts) in ``fmt``.

    ``name`` prints ``KIND/NAME`` per item (``kind`` given) or the name alone; ``jsonpath=``
    applies the template to each item of a list, or to ``{"items": [...]}`` when the template
    names ``.items``.
    """
    if fmt.startswith(JSONPATH):
        from lab.errors import LabError
        from lab.runtime.jsonpath import render

        template = fmt.removeprefix(JSONPATH)
        try:
            if isinstance(data, list) and ".items" not in template:
                text = "\n".join(render(template, item) for item in data)
            else:
                text = render(template, {"items": data} if isinstance(data, list) else data)
        except LabError as exc:
            hint = exc.details.get("hint")
            fail(exc.message, str(hint) if hint else None, code=2)
        if text:
            text = "\n".join(terminal_text(line) for line in text.split("\n"))
            print(text, end="" if text.endswith("\n") else "\n")
        return
    if fmt == "name":
        for item in data if isinstance(data, list) else [data]:
            name = item.get("name", item.get("id")) if isinstance(item, dict) else item
            print(terminal_text(f"{kind}/{name}" if kind else str(name)))
        return
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str, sort_keys=True))
        return
    if fmt == "yaml":
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=True), end="")
        return
    for line in table_lines(data if isinstance(data, list) else [data], fmt, columns, wide):
        print(line)


def table_lines(
    rows: list[dict[str, Any]], fmt: str, columns: Sequence[str] = (), wide: Sequence[str] = ()
) -> list[str]:
    """The header and one line per row, columns padded to their widest cell."""
    cols = list(columns) + (list(wide) if fmt == "wide" else [])
    if not cols and rows:
        cols = list(rows[0].keys())
    table = [[c.upper() for c in cols]]
    table += [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]


def terminal_text(text: str) -> str:
    """Text that came from labd, an agent or a bastion, made safe to print on a terminal:
    control characters (ESC sequences, newlines that forge lines, bidi overrides) are shown as
    escapes (``\x1b``, ``\n``, ``\u202e``); everything else is unchanged."""
    from lab.model.text import escape_control

    return escape_control(text)


def _cell(value: Any) -> str:
    return terminal_text(_cell_text(value))


def _cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"  # 3829.48, not 3829.477069999939
    return str(value)


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    """Print ``error: message`` (and ``hint: hint``) to stderr and exit with ``code``."""
    line = f"error: {terminal_text(' '.join(message.split()))}"
    if hint:
        line += f"\nhint: {terminal_text(' '.join(hint.split()))}"
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(code)


def check_format(fmt: str) -> str:
    """``fmt`` checked: one of :data:`FORMATS` or ``jsonpath=EXPR``; else exit 2."""
    if fmt.startswith(JSONPATH):
        if not fmt.removeprefix(JSONPATH).strip():
            fail("-o jsonpath= needs a template", "e.g. -o jsonpath='{.name}'", code=2)
        return fmt
    if fmt not in FORMATS:
        fail(
            f"unknown output format {fmt!r}",
            "use one of: " + ", ".join(FORMATS) + ", jsonpath=EXPR",
            code=2,
        )
    return fmt


def is_data(fmt: str) -> bool:
    """Whether ``fmt`` prints the data itself (json, yaml, name, jsonpath), not a table."""
    return fmt not in ("table", "wide")


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (blocking); BrokenPipeError once its reader is gone."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def write_out(fd: int, data: bytes) -> None:
    """Write ``data`` to ``fd`` without blocking the event loop: a stdout nobody reads blocks
    neither the connection (labd's pings are answered, output credit is not granted) nor
    Ctrl-C. Small writes go straight through when ``fd`` has room for them (a line of
    ``labctl logs`` costs no thread hop); anything else is written in a thread."""
    import trio

    if len(data) <= select.PIPE_BUF and _has_room(fd):
        write_all(fd, data)  # room for PIPE_BUF bytes: this write cannot block
        await trio.lowlevel.checkpoint()
        return
    await trio.to_thread.run_sync(write_all, fd, data, abandon_on_cancel=True)


def _has_room(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(0))
