"""Text that is safe to store, log and print.

Names, labels, roles, descriptions and command arguments come from users, agents and LAN
clients; a control character in one can forge a log line or drive a terminal (ESC sequences),
and a lone surrogate cannot be encoded at all. :func:`plain_text_problem` says what is wrong with
such a value; :func:`escape_control` writes each such character as a Python-style escape
(``\\n``, ``\\x1b``, ``\\u202e``) and leaves everything else alone, so ordinary text is unchanged
and escaping twice changes nothing more (:mod:`lab.runtime.safetext` applies it to log records).
"""

from __future__ import annotations

import re
from typing import Annotated

from attrs import frozen

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, bidi overrides and
# isolates (they reorder what a terminal shows), and lone surrogates (not encodable).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character written as a visible escape."""
    return _CONTROL.sub(_escape, text)


def has_control(text: str) -> bool:
    """Whether ``text`` holds a character :func:`escape_control` would escape."""
    return _CONTROL.search(text) is not None


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def plain_text_problem(text: str, *, allow: str = "") -> str | None:
    """Why ``text`` may not be a name, label, role, description or argument; None if it may.

    Characters in ``allow`` (e.g. tab and newline in command arguments) are accepted.
    """
    if has_surrogate(text):
        return "contains a lone surrogate (not valid Unicode)"
    bad = [ch for ch in _CONTROL.findall(text) if ch not in allow]
    if bad:
        return f"contains a control character ({escape_control(bad[0])})"
    return None


@frozen
class PlainText:
    """Marks a ``str`` field as plain text (see :data:`Name`, :data:`Arg`): the converter
    refuses control characters other than ``allow`` in it, naming the field."""

    allow: str = ""


Name = Annotated[str, PlainText()]
"""A name, label, role, pattern or description: no control characters at all."""
Arg = Annotated[str, PlainText(allow="\t\n")]
"""A command argument or environment value: tab and newline allowed (scripts), nothing else."""
