"""Agent facts: what an agent reports about its machine, kept and shown as data.

Facts come from the agent (at enrollment and in each ``hello``), so labd bounds them before it
stores them: a JSON object of at most :data:`MAX_FACTS_BYTES` once encoded, nested at most
:data:`MAX_FACTS_DEPTH` levels, with plain-text keys and no lone surrogates anywhere. Values may
hold any other text; whoever prints them escapes control characters (``labctl describe``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from attrs import frozen

from lab.model.safejson import bad_strings
from lab.model.text import plain_text_problem

MAX_FACTS_BYTES = 64 * 1024
MAX_FACTS_DEPTH = 8
MAX_KEY_LENGTH = 128


@frozen
class FactsSpec:
    """Marks a ``dict[str, Any]`` field as agent facts (the converter checks it)."""


Facts = Annotated[dict[str, Any], FactsSpec()]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value if isinstance(k, str)] + [
            k for v in value.values() for k in _keys(v)
        ]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def facts_problem(value: Any) -> str | None:
    """Why ``value`` may not be stored as facts; None when it may."""
    if not isinstance(value, dict):
        return f"facts must be a JSON object, not {type(value).__name__}"
    if next(bad_strings(value, "facts"), None) is not None:
        return "facts hold text that is not valid Unicode (a lone surrogate)"
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as exc:
        return f"facts are not JSON data: {exc}"
    if size > MAX_FACTS_BYTES:
        return f"facts of {size} bytes are over the limit of {MAX_FACTS_BYTES}"
    if _depth(value) > MAX_FACTS_DEPTH:
        return f"facts nest deeper than {MAX_FACTS_DEPTH} levels"
    for key in _keys(value):
        if len(key) > MAX_KEY_LENGTH or plain_text_problem(key):
            return f"a fact name is longer than {MAX_KEY_LENGTH} or holds a control character"
    return None


def structure_facts(value: Any, _: Any) -> dict[str, Any]:
    """The converter's hook for :data:`Facts`: a copy of ``value`` or ValueError saying why."""
    problem = facts_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return dict(value)
