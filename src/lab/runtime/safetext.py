"""Control characters made visible: text from the network reaches logs and terminals escaped.

A newline inside a logged value would forge a log line; an ESC sequence would reach whoever
reads the log in a terminal. :func:`escape_control` writes each such character as a Python-style
escape (``\\n``, ``\\x1b``, ``\\u202e``) and leaves everything else alone, so ordinary text is
unchanged and escaping twice changes nothing more. :class:`EscapeControlFilter` applies it to
whole log records.
"""

from __future__ import annotations

import logging
import re

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, bidi overrides and
# isolates (they reorder what a terminal shows), and lone surrogates (not encodable).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
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


class EscapeControlFilter(logging.Filter):
    """Rewrites a record's message with control characters escaped (never drops a record).

    Installed on a handler it runs before that handler formats the record; the record is shared
    with the handlers after it, which then see the escaped message too. Tracebacks are left as
    they are (they come from this process, not from the network).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if has_control(message):
            record.msg = escape_control(message)
            record.args = None
        return True


__all__ = ["EscapeControlFilter", "escape_control", "has_control"]
