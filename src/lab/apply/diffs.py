"""Unified diffs of declared objects, as ``labctl diff`` prints them (one per object)."""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from lab.model.declared import Declared


def _lines(obj: Declared | None) -> list[str]:
    if obj is None:
        return []
    body: dict[str, Any] = {"kind": obj.kind, "name": obj.name, **obj.body()}
    if obj.kind != "Server":
        body["metadata"].pop("labels", None)
        if not body["metadata"]:
            body.pop("metadata")
    else:
        body.pop("spec", None)
    text = yaml.safe_dump(body, sort_keys=True, default_flow_style=False)
    return text.splitlines(keepends=True)


def unified(before: Declared | None, after: Declared | None, label: str) -> str:
    """``before`` → ``after`` as a unified diff headed ``a/LABEL`` and ``b/LABEL``; empty
    when they are equal."""
    a, b = _lines(before), _lines(after)
    if a == b:
        return ""
    return "".join(
        difflib.unified_diff(
            a,
            b,
            fromfile="/dev/null" if before is None else f"a/{label}",
            tofile="/dev/null" if after is None else f"b/{label}",
        )
    )
