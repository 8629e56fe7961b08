"""Control characters made visible: text from the network reaches logs and terminals escaped.

A newline inside a logged value would forge a log line; an ESC sequence would reach whoever
reads the log in a terminal. :func:`escape_control` writes each such character as a Python-style
escape (``\\n``, ``\\x1b``, ``\\u202e``) and leaves everything else alone, so ordinary text is
unchanged and escaping twice changes nothing more. :class:`EscapeControlFilter` applies it to
whole log records.
"""

from __future__ import annotations

import logging

# The one definition of what is escaped lives in lab.model (request validation uses it too).
from lab.model.text import escape_control, has_control


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
