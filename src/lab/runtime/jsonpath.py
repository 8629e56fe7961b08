"""``-o jsonpath=EXPR``: the part of kubectl's JSONPath templates that scripts use.

A template is literal text with ``{...}`` expressions: ``{.name}``, ``{.labels.role}``,
``{.items[0].name}``, ``{.items[*].name}`` (every match, joined by spaces), ``{"\\n"}`` and
``{"\\t"}`` (quoted literals), and ``{range .items[*]}...{end}`` (the inner template once per
match). A missing key prints nothing; a bad template is :class:`lab.errors.Invalid`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lab.errors import Invalid

_TOKEN = re.compile(r"\{([^{}]*)\}")
_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\*|-?\d+)\]|\[['\"]([^'\"]+)['\"]\]")


def _bad(template: str, why: str) -> Invalid:
    return Invalid(
        f"jsonpath {template!r}: {why}",
        details={"fields": ["output"], "hint": "e.g. -o jsonpath='{.name}'"},
    )


def _select(data: Any, path: str, template: str) -> list[Any]:
    """Every value ``path`` (``.a.b[0][*]``) matches in ``data``."""
    path = path.strip()
    if path in ("", ".", "@", "$"):
        return [data]
    path = path.removeprefix("$").removeprefix("@")
    current = [data]
    pos = 0
    while pos < len(path):
        step = _STEP.match(path, pos)
        if step is None:
            raise _bad(template, f"cannot read {path[pos:]!r}")
        pos = step.end()
        key, index, quoted = step.groups()
        found: list[Any] = []
        for value in current:
            if key is not None or quoted is not None:
                name = key if key is not None else quoted
                if isinstance(value, dict) and name in value:
                    found.append(value[name])
            elif isinstance(value, list):
                if index == "*":
                    found.extend(value)
                elif -len(value) <= int(index) < len(value):
                    found.append(value[int(index)])
            elif isinstance(value, dict) and index == "*":
                found.extend(value.values())
        current = found
    return current


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _literal(body: str, template: str) -> str:
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        raise _bad(template, f"bad literal {body}") from None
    return value if isinstance(value, str) else _text(value)


def _render(parts: list[tuple[str, str]], data: Any, template: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(parts):
        kind, body = parts[i]
        if kind == "text":
            out.append(body)
        elif body.startswith(("'", '"')):
            out.append(_literal(body, template))
        elif body.startswith("range "):
            depth, j = 1, i + 1
            while j < len(parts) and depth:
                if parts[j][0] == "expr" and parts[j][1].startswith("range "):
                    depth += 1
                elif parts[j] == ("expr", "end"):
                    depth -= 1
                j += 1
            if depth:
                raise _bad(template, "{range} without {end}")
            inner = parts[i + 1 : j - 1]
            for item in _select(data, body.removeprefix("range "), template):
                out.append(_render(inner, item, template))
            i = j
            continue
        elif body == "end":
            raise _bad(template, "{end} without {range}")
        else:
            out.append(" ".join(_text(v) for v in _select(data, body, template)))
        i += 1
    return "".join(out)


def render(template: str, data: Any) -> str:
    """``template`` applied to ``data`` (a dict or list from labd's JSON)."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for match in _TOKEN.finditer(template):
        if match.start() > pos:
            parts.append(("text", template[pos : match.start()]))
        parts.append(("expr", match.group(1).strip()))
        pos = match.end()
    if pos < len(template):
        parts.append(("text", template[pos:]))
    if "{" in "".join(b for k, b in parts if k == "text"):
        raise _bad(template, "unbalanced braces")
    return _render(parts, data, template)
