"""Decoding untrusted JSON within limits: size and nesting are checked before decoding.

Python's decoder recurses once per nesting level, so a deep enough document raises
RecursionError (a 500 where a 400 is due) after burning CPU; and JSON lets ``"\\ud800"`` through,
a lone surrogate that no UTF-8 encoder (SQLite, PostgreSQL, log files) accepts. :func:`loads`
refuses both with :class:`lab.errors.Invalid` naming the field and the reason.

The nesting check runs on the raw text without building anything: string literals are blanked
out, every byte but the brackets is dropped, and the running sum of +1 (opening) and -1
(closing) peaks at the depth; all of it in C loops.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from lab.errors import Invalid
from lab.model.text import escape_control

MAX_BYTES = 1024 * 1024
"""Default cap on the size of one JSON document (a labd request body is capped the same)."""
MAX_DEPTH = 32
"""Default cap on nesting: arrays and objects inside each other."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Opening brackets become +1 and closing ones -1 (as signed bytes); everything else goes.
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def nesting_exceeds(text: str, max_depth: int) -> bool:
    """True when ``text`` nests arrays/objects deeper than ``max_depth`` (malformed text that
    does not pair up is left to the decoder to report)."""
    # Multi-byte UTF-8 sequences hold no ASCII bytes, so deleting every other byte is exact.
    brackets = (
        _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_SIGNS, _NOT_BRACKETS)
    )
    if len(brackets) <= max_depth:
        return False
    return max(accumulate(array("b", brackets))) > max_depth


def _too_large(size: int, max_bytes: int, path: str) -> Invalid:
    return Invalid(
        f"JSON text of {size} bytes is over the limit of {max_bytes}",
        details={"fields": [path], "reason": "too_large", "limit": max_bytes},
    )


def _too_deep(max_depth: int, path: str) -> Invalid:
    return Invalid(
        f"JSON nested deeper than {max_depth} levels",
        details={"fields": [path], "reason": "too_deep", "limit": max_depth},
    )


def loads(
    raw: bytes | str,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    path: str = "body",
) -> Any:
    """Decode one JSON document within ``max_bytes`` and ``max_depth``.

    Raises :class:`Invalid` (``details.reason``: ``too_large``, ``too_deep``, ``not_json``,
    ``surrogate``) naming ``path`` or the path of the offending string.
    """
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise _too_large(size, max_bytes, path)
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Invalid(
                "request body is not UTF-8 text",
                details={"fields": [path], "reason": "not_json"},
            ) from exc
    else:
        text = raw
    if nesting_exceeds(text, max_depth):
        raise _too_deep(max_depth, path)
    try:
        data = json.loads(text)
    except RecursionError:
        raise _too_deep(max_depth, path) from None
    except ValueError as exc:
        raise Invalid(
            f"not JSON: {exc}", details={"fields": [path], "reason": "not_json"}
        ) from None
    # Lone surrogates come from \uD800-\uDFFF escapes (or from a str that holds one): walk the
    # document only when the text has any.
    if _SURROGATE_ESCAPE.search(text) or _SURROGATE.search(text):
        check_text(data, path)
    return data


def bad_strings(value: Any, path: str) -> Iterator[str]:
    """Paths of the strings (keys included) in decoded JSON ``value`` with a lone surrogate."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _SURROGATE.search(key):
                yield f"{path} (a key)"
            yield from bad_strings(item, f"{path}.{key}" if isinstance(key, str) else path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from bad_strings(item, f"{path}[{i}]")


def check_text(value: Any, path: str = "body") -> None:
    """Raise :class:`Invalid` if a string in ``value`` holds a lone surrogate (not encodable)."""
    bad = list(bad_strings(value, path))
    if bad:
        shown = [_printable(p) for p in bad[:10]]
        raise Invalid(
            f"text is not valid Unicode (a lone surrogate) in {shown[0]}",
            details={"fields": shown, "reason": "surrogate"},
        )


def _printable(path: str) -> str:
    """A field path safe to log and store: surrogates and control characters escaped."""
    return escape_control(path)
